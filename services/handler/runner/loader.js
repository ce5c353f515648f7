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

/** Escapes `text` for use inside a regular expression. */
function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * The line of `file` an error points at, from its stack (a syntax error's first stack line is
 * "file:LINE"; a runtime error has a frame "at ... file:LINE:COL"), or undefined. ES modules
 * are named by URL, possibly with the host's "?load=N" suffix.
 */
function errorLine(err, file) {
  const stack = err && typeof err.stack === 'string' ? err.stack : '';
  const names = `(?:${escapeRegExp(pathToFileURL(file).href)}|${escapeRegExp(file)})`;
  const match = new RegExp(`${names}(?:\\?[^:\\s]*)?:(\\d+)`).exec(stack);
  return match ? Number(match[1]) : undefined;
}

// ES-module-only constructs, matched where a script parse stopped on them (see below).
const IMPORT_DECLARATION = /^import\s*(?:[\w$*{}\s,]+?\s*from\s*)?(['"])(?:(?!\1)[^\\\n]|\\.)*\1(?:\s*(?:with|assert)\s*\{[^}]*\})?\s*;?/;
const EXPORT_FROM = /^export\s*(?:\*(?:\s*as\s+[\w$]+)?|\{[^}]*\})\s*from\s*(['"])(?:(?!\1)[^\\\n]|\\.)*\1\s*;?/;
const EXPORT_LIST = /^export\s*\{[^}]*\}\s*;?/;
const EXPORT_DEFAULT = /^export\s+default\b/;
const STRICT = '"use strict";';

/** `text` with `length` characters at `offset` replaced by `replacement` padded with spaces (newlines kept). */
function overwrite(text, offset, length, replacement = '') {
  const span = text.slice(offset, offset + length).replace(/[^\n]/g, ' ');
  return text.slice(0, offset) + replacement + span.slice(replacement.length) + text.slice(offset + length);
}

/**
 * Makes the ES-module-only construct at `offset` acceptable to a script parse without moving
 * any line: import declarations and re-exports are blanked, `export` dropped, `export default`
 * becomes an assignment, top-level `await` becomes `void`, `import.meta` an identifier. Returns the new
 * text, or undefined if nothing known starts at `offset`.
 */
function neutralize(text, offset) {
  // V8 points at "meta" in import.meta.
  if (text.startsWith('import.meta', offset - 7)) return overwrite(text, offset - 7, 11, 'import_meta');
  const rest = text.slice(offset);
  const match =
    IMPORT_DECLARATION.exec(rest) || EXPORT_FROM.exec(rest) || EXPORT_LIST.exec(rest);
  if (match) return overwrite(text, offset, match[0].length);
  const exportDefault = EXPORT_DEFAULT.exec(rest);
  if (exportDefault) return overwrite(text, offset, exportDefault[0].length, '_=');
  if (/^export\b/.test(rest)) return overwrite(text, offset, 6);
  if (/^await\b/.test(rest)) {
    const forAwait = /\bfor\s*$/.test(text.slice(Math.max(0, offset - 20), offset));
    return overwrite(text, offset, 5, forAwait ? '' : 'void');
  }
  return undefined;
}

/**
 * Finds the line of a syntax error in ES module code. Node's import() reports such errors
 * without any position, so the code is parsed as a strict script (this runs nothing), each
 * ES-module-only construct the parser stops at is neutralised, until the parser stops at an
 * error with the same `message`. Best effort, bounded: undefined when not found.
 */
function locateModuleSyntaxError(code, message) {
  let text = code;
  for (let round = 0; round < 64; round++) {
    let err;
    try {
      vm.compileFunction(STRICT + text, [], { filename: 'module' });
      return undefined;
    } catch (caught) {
      err = caught;
    }
    const where = /^module:(\d+)\n[^\n]*\n([^^\n]*)\^/.exec(String(err && err.stack));
    if (!where) return undefined;
    const line = Number(where[1]);
    if (err.message === message) return line;
    let column = where[2].length;
    if (line === 1) column -= STRICT.length;
    let offset = 0;
    for (let i = 1; i < line; i++) offset = text.indexOf('\n', offset) + 1;
    const next = neutralize(text, offset + column);
    if (next === undefined) return undefined;
    text = next;
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
  let line = errorLine(err, file);
  if (line === undefined && err instanceof SyntaxError && file.endsWith('.mjs')) {
    try {
      line = locateModuleSyntaxError(fs.readFileSync(file, 'utf8'), err.message);
    } catch {}
  }
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
  locateModuleSyntaxError,
  moduleDir,
  prepareFunction,
  removeVersion,
  removeVersions,
  versionDir,
};
