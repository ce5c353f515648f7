'use strict';
// Dependencies from the read-only module cache: ESM-only and scoped packages, linked by
// symlinks, used through `import` in ES modules and `await import()` in CommonJS.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { describe, it, before, after } = require('node:test');
const { startRunner, tempDir } = require('./helpers');

/** Writes a package into the cache layout <cache>/<name>@<version>/node_modules/<name>. */
function writePackage(cache, name, version, manifest, files, siblings = {}) {
  const root = path.join(cache, `${name}@${version}`, 'node_modules');
  const write = (dir, pkg, contents) => {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(pkg));
    for (const [file, text] of Object.entries(contents)) fs.writeFileSync(path.join(dir, file), text);
  };
  write(path.join(root, name), { name, version, ...manifest }, files);
  // The package's own dependencies sit next to it in the same closure.
  for (const [dep, { manifest: depManifest, files: depFiles }] of Object.entries(siblings)) {
    write(path.join(root, dep), { name: dep, version: '1.0.0', ...depManifest }, depFiles);
  }
}

/** chmod -R: directories 0555, files 0444 (the cache is mounted read-only in production). */
function makeReadOnly(dir) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) makeReadOnly(full);
    else fs.chmodSync(full, 0o444);
  }
  fs.chmodSync(dir, 0o555);
}

/** chmod -R u+w, so the cache can be removed. */
function makeWritable(dir) {
  fs.chmodSync(dir, 0o755);
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) makeWritable(full);
    else fs.chmodSync(full, 0o644);
  }
}

describe('module cache', () => {
  let runner;
  let cache;
  before(async () => {
    cache = tempDir('fnhook-modules-');
    const esmOnly = { type: 'module', exports: { import: './index.js' } };
    writePackage(
      cache,
      'esm-only',
      '3.1.0',
      { ...esmOnly, dependencies: { 'esm-helper': '1.0.0' } },
      { 'index.js': "import { suffix } from 'esm-helper';\nexport const greet = (name) => `hello ${name}${suffix}`;\nexport default greet;\n" },
      { 'esm-helper': { manifest: esmOnly, files: { 'index.js': "export const suffix = '!';\n" } } },
    );
    writePackage(cache, '@acme/shout', '2.0.0', esmOnly, {
      'index.js': 'export function shout(text) { return text.toUpperCase(); }\n',
    });
    writePackage(cache, 'cjs-pad', '1.3.0', { main: 'index.js' }, {
      'index.js': "module.exports = (text, n) => text.padStart(n, '.');\n",
    });
    makeReadOnly(cache);
    runner = await startRunner({ modulesDir: cache });
    assert.equal((await runner.assign('acme')).status, 200);
  });
  after(async () => {
    await runner.stop();
    makeWritable(cache);
    fs.rmSync(cache, { recursive: true, force: true });
  });

  const dependencies = { 'esm-only': '3.1.0', '@acme/shout': '2.0.0', 'cjs-pad': '1.3.0' };

  it('CommonJS uses ESM-only and scoped packages through await import(), and require()s CJS ones', async () => {
    const load = await runner.load('cjs-user', {
      dependencies,
      code: `const pad = require('cjs-pad');
      module.exports = async (ctx) => {
        const { greet } = await import('esm-only');
        const { shout } = await import('@acme/shout');
        let requireError = null;
        try { require('esm-only'); } catch (err) { requireError = err.code; }
        return { body: { text: pad(shout(greet(ctx.query.name)), 16), requireError } };
      };`,
    });
    assert.equal(load.status, 200, load.text);
    const res = await runner.run('cjs-user', '?name=ada');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.text, '......HELLO ADA!');
    assert.ok(res.json.requireError, 'an ESM-only package cannot be required: import() is the way');
  });

  it('an ES module imports ESM-only and scoped packages statically', async () => {
    const load = await runner.load('esm-user', {
      dependencies,
      code: `import greet from 'esm-only';
import { shout } from '@acme/shout';
import pad from 'cjs-pad';
export default async (ctx) => ({ body: pad(shout(greet(ctx.query.name)), 12) });
`,
    });
    assert.equal(load.status, 200, load.text);
    const res = await runner.run('esm-user', '?name=bo');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.text, '...HELLO BO!');
  });

  it('links each dependency (scoped ones under @scope) into the function version folder', async () => {
    const modulesOf = path.join(runner.workDir, 'functions', 'esm-user', 'v1', 'node_modules');
    assert.equal(fs.readlinkSync(path.join(modulesOf, 'esm-only')), path.join(cache, 'esm-only@3.1.0', 'node_modules', 'esm-only'));
    assert.equal(
      fs.readlinkSync(path.join(modulesOf, '@acme', 'shout')),
      path.join(cache, '@acme', 'shout@2.0.0', 'node_modules', '@acme', 'shout'),
    );
    assert.ok(fs.statSync(path.join(modulesOf, '@acme')).isDirectory());
  });

  it('a new version replaces the old one and its folder', async () => {
    const v2 = await runner.load('esm-user', {
      version: 2,
      dependencies: { '@acme/shout': '2.0.0' },
      code: "import { shout } from '@acme/shout';\nexport default async () => shout('v2');\n",
    });
    assert.equal(v2.status, 200, v2.text);
    const res = await runner.run('esm-user');
    assert.equal(res.text, 'V2');
    assert.equal(res.headers['x-fnhook-version'], '2');
    assert.ok(fs.existsSync(path.join(runner.workDir, 'functions', 'esm-user', 'v2', 'index.mjs')));
  });

  it('answers 424 for a version that is not in the cache', async () => {
    const res = await runner.load('missing', {
      dependencies: { '@acme/shout': '9.9.9' },
      code: 'module.exports = async () => 1',
    });
    assert.equal(res.status, 424);
    assert.match(res.json.error.message, /@acme\/shout@9\.9\.9/);
  });
});
