'use strict';
// Puts a function version on disk, ready for the host to require or import: detects CommonJS
// versus ES module from the code itself, writes index.cjs / index.mjs, and links the function's
// dependencies from the read-only module cache. Everything here is synchronous and local: a load
// is a few file writes and symlinks, never an npm run or another process.

const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { pathToFileURL } = require('node:url');
const { HttpError } = require('./jsonhttp');

// The parameters of Node's CommonJS wrapper: compiling the code as this function's body is what
// require() does, so it accepts exactly what require() accepts (top-level return included).
const CJS_PARAMS = ['exports', 'require', 'module', '__filename', '__dirname'];

// Syntax errors that only mean "this is an ES module" when code is compiled as a script.
const ESM_SYNTAX = [
  'Cannot use import statement outside a module',
  "Unexpected token 'export'",
  "Cannot use 'import.meta' outside a module",
  'await is only valid in async functions and the top level bodies of modules',
];

// npm package names, scoped ones too (legacy names may hold capitals); no "." or ".." segment.
const DEP_NAME = /^(?:@[a-zA-Z0-9~-][a-zA-Z0-9._~-]*\/)?[a-zA-Z0-9~-][a-zA-Z0-9._~-]*$/;
// Exact versions as the builder records them (semver with prerelease/build parts).
const DEP_VERSION = /^[0-9A-Za-z][0-9A-Za-z.+-]*$/;

/**
 * Tells CommonJS from ES module code by compiling it as a CommonJS body (this does not run it).
 * Returns {format: 'cjs'|'esm', error?}; `error` is set when the code is CommonJS with a syntax
 * error (ES modules' syntax errors show when the host imports them).
 */
function detectFormat(code, filename) {
  try {
    vm.compileFunction(code, CJS_PARAMS, { filename });
    return { format: 'cjs' };
  } catch (err) {
    if (err && ESM_SYNTAX.some((text) => String(err.message).includes(text))) {
      return { format: 'esm' };
    }
    return { format: 'cjs', error: err };
  }
}

/** The line of `file` an error points at (from its stack), or undefined. */
function errorLine(err, file) {
  const stack = err && typeof err.stack === 'string' ? err.stack : '';
  for (const name of [pathToFileURL(file).href, file]) {
    const at = stack.indexOf(name + ':');
    if (at >= 0) {
      const match = /^:(\d+)/.exec(stack.slice(at + name.length));
      if (match) return Number(match[1]);
    }
  }
  return undefined;
}

/**
 * Describes an error raised while compiling or loading `file` in one line for the tenant:
 * "SyntaxError: Unexpected token ';' (line 3)". No stack, no runner paths.
 */
function describeLoadError(err, file) {
  let text;
  if (err instanceof Error || (err && typeof err.message === 'string')) {
    text = `${err.name || 'Error'}: ${err.message}`;
  } else {
    text = `thrown: ${String(err)}`;
  }
  text = text.split('\n')[0];
  const dir = path.dirname(file);
  text = text.split(pathToFileURL(dir).href + '/').join('').split(dir + path.sep).join('');
  const line = errorLine(err, file);
  return line === undefined ? text : `${text} (line ${line})`;
}

/** The module cache folder a dependency links to: <modules>/<name>@<version>/node_modules/<name>. */
function moduleDir(modulesDir, name, version) {
  return path.join(modulesDir, `${name}@${version}`, 'node_modules', name);
}

/** The folder of one function version: <functions>/<name>/v<version>. */
function versionDir(functionsDir, name, version) {
  return path.join(functionsDir, name, `v${version}`);
}

/**
 * Writes one function version to disk and links its dependencies.
 * Input: {functionsDir, modulesDir, name, version, code, dependencies}. Returns
 * {dir, file, format}. Throws HttpError 422 `compile_error` for CommonJS syntax errors,
 * 424 `module_missing` for a dependency missing from the module cache, 400 for a bad
 * dependency name or version. Any earlier folder of the same version is replaced.
 */
function prepareFunction({ functionsDir, modulesDir, name, version, code, dependencies }) {
  const dir = versionDir(functionsDir, name, version);
  const cjsFile = path.join(dir, 'index.cjs');
  const detected = detectFormat(code, cjsFile);
  if (detected.error) {
    throw new HttpError(422, 'compile_error', describeLoadError(detected.error, cjsFile));
  }

  const links = [];
  for (const [dep, depVersion] of Object.entries(dependencies || {})) {
    if (!DEP_NAME.test(dep)) {
      throw new HttpError(400, 'invalid_dependency', `invalid dependency name ${JSON.stringify(dep)}`);
    }
    if (typeof depVersion !== 'string' || !DEP_VERSION.test(depVersion)) {
      throw new HttpError(400, 'invalid_dependency', `dependency ${dep} needs an exact version`);
    }
    const target = moduleDir(modulesDir, dep, depVersion);
    if (!fs.existsSync(target)) {
      throw new HttpError(424, 'module_missing', `module ${dep}@${depVersion} is not in the module cache`);
    }
    links.push([path.join(dir, 'node_modules', dep), target]);
  }

  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  for (const [link, target] of links) {
    fs.mkdirSync(path.dirname(link), { recursive: true }); // node_modules, and @scope if scoped
    fs.symlinkSync(target, link, 'dir');
  }
  const file = detected.format === 'esm' ? path.join(dir, 'index.mjs') : cjsFile;
  fs.writeFileSync(file, code);
  return { dir, file, format: detected.format };
}

/** Removes every version folder of function `name` except version `keep` (none if undefined). */
function removeVersions(functionsDir, name, keep) {
  const fnDir = path.join(functionsDir, name);
  let entries;
  try {
    entries = fs.readdirSync(fnDir);
  } catch {
    return;
  }
  for (const entry of entries) {
    if (entry !== `v${keep}`) fs.rmSync(path.join(fnDir, entry), { recursive: true, force: true });
  }
}

/** Removes one version folder (after a failed load). */
function removeVersion(functionsDir, name, version) {
  fs.rmSync(versionDir(functionsDir, name, version), { recursive: true, force: true });
}

module.exports = {
  detectFormat,
  describeLoadError,
  errorLine,
  moduleDir,
  prepareFunction,
  removeVersion,
  removeVersions,
  versionDir,
};
