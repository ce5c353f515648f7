'use strict';
// Unit tests of loader.js: format detection, error lines, what lands on disk.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { describe, it, after } = require('node:test');
const loader = require('../loader');
const { tempDir } = require('./helpers');

describe('detectFormat', () => {
  const cases = [
    ['module.exports = async () => 1;', 'cjs'],
    ['exports.default = () => 1;', 'cjs'],
    ['return; // a top-level return is fine in CommonJS', 'cjs'],
    ['#!/usr/bin/env node\nmodule.exports = () => 1;', 'cjs'],
    ['const m = await import("x"); module.exports = m;', 'esm'],
    ['export default async () => 1;', 'esm'],
    ['import fs from "node:fs";\nmodule.exports = 1;', 'esm'],
    ['const u = import.meta.url;\nexport default () => u;', 'esm'],
    ['module.exports = async () => { const m = await import("x"); return m; };', 'cjs'],
    ['// export default is only a comment here\nmodule.exports = () => "export default";', 'cjs'],
  ];
  for (const [code, format] of cases) {
    it(`${JSON.stringify(code.slice(0, 40))} is ${format}`, () => {
      const detected = loader.detectFormat(code, '/f/index.cjs');
      assert.equal(detected.format, format);
      assert.equal(detected.error, undefined);
    });
  }

  it('reports a CommonJS syntax error with its line', () => {
    const detected = loader.detectFormat('const a = 1;\n\nconst b = ;\n', '/f/index.cjs');
    assert.equal(detected.format, 'cjs');
    assert.equal(loader.describeLoadError(detected.error, '/f/index.cjs'), "SyntaxError: Unexpected token ';' (line 3)");
  });
});

describe('locateModuleSyntaxError', () => {
  const cases = [
    ['import fs from "node:fs";\n\nexport default async () => {\n  return {;\n};\n', "Unexpected token ';'", 4],
    [
      'import {\n  a,\n  b as c\n} from "x";\nimport * as ns from \'y\';\nimport "side";\nexport { a, c };\n' +
        'export * from "z";\nexport const q = import.meta.url;\nexport default class {}\nawait 1;\n' +
        'for await (const x of y) {}\nlet z = 08;\n',
      'Decimals with leading zeros are not allowed in strict mode.',
      13,
    ],
    ['export function a() {}\nexport class B {}\nexport async function c() {}\n\n)', "Unexpected token ')'", 5],
    ['export default {\n  a: 1,\n  b: 2\n  c: 3 };\n', "Unexpected identifier 'c'", 4],
    ['export default () => 1;\nwith (x) {}\n', 'Strict mode code may not include a with statement', 2],
  ];
  for (const [code, message, line] of cases) {
    it(`finds line ${line} of "${message}"`, () => {
      assert.equal(loader.locateModuleSyntaxError(code, message), line);
    });
  }

  it('gives up rather than guess', () => {
    assert.equal(loader.locateModuleSyntaxError('export default () => 1;\n', 'anything'), undefined);
    assert.equal(loader.locateModuleSyntaxError('export default () => {\n', 'some other message'), undefined);
  });
});

describe('prepareFunction', () => {
  const root = tempDir('fnhook-loader-');
  after(() => fs.rmSync(root, { recursive: true, force: true }));
  const functionsDir = path.join(root, 'functions');
  const modulesDir = path.join(root, 'modules');
  fs.mkdirSync(path.join(modulesDir, '@s', 'p@1.0.0', 'node_modules', '@s', 'p'), { recursive: true });
  fs.mkdirSync(path.join(modulesDir, 'q@2.0.0-rc.1', 'node_modules', 'q'), { recursive: true });

  it('writes index.cjs or index.mjs and links dependencies', () => {
    const cjs = loader.prepareFunction({
      functionsDir,
      modulesDir,
      name: 'f',
      version: 3,
      code: 'module.exports = () => 1;',
      dependencies: { '@s/p': '1.0.0', q: '2.0.0-rc.1' },
    });
    assert.equal(cjs.format, 'cjs');
    assert.equal(cjs.file, path.join(functionsDir, 'f', 'v3', 'index.cjs'));
    assert.equal(fs.readFileSync(cjs.file, 'utf8'), 'module.exports = () => 1;');
    assert.equal(
      fs.readlinkSync(path.join(cjs.dir, 'node_modules', '@s', 'p')),
      path.join(modulesDir, '@s', 'p@1.0.0', 'node_modules', '@s', 'p'),
    );
    assert.equal(fs.readlinkSync(path.join(cjs.dir, 'node_modules', 'q')), path.join(modulesDir, 'q@2.0.0-rc.1', 'node_modules', 'q'));

    const esm = loader.prepareFunction({ functionsDir, modulesDir, name: 'f', version: 4, code: 'export default () => 1;' });
    assert.equal(esm.file, path.join(functionsDir, 'f', 'v4', 'index.mjs'));

    loader.removeVersions(functionsDir, 'f', 4);
    assert.deepEqual(fs.readdirSync(path.join(functionsDir, 'f')), ['v4']);
  });

  it('refuses missing modules and names that could leave the cache', () => {
    const attempt = (dependencies) => {
      try {
        loader.prepareFunction({ functionsDir, modulesDir, name: 'g', version: 1, code: 'module.exports = () => 1;', dependencies });
      } catch (err) {
        return [err.status, err.code];
      }
      return 'loaded';
    };
    assert.deepEqual(attempt({ q: '9.9.9' }), [424, 'module_missing']);
    assert.deepEqual(attempt({ '../x': '1.0.0' }), [400, 'invalid_dependency']);
    assert.deepEqual(attempt({ '@s/../../x': '1.0.0' }), [400, 'invalid_dependency']);
    assert.deepEqual(attempt({ q: '../../2.0.0' }), [400, 'invalid_dependency']);
    assert.deepEqual(attempt({ q: '^2.0.0' }), [400, 'invalid_dependency']);
    assert.equal(fs.existsSync(path.join(functionsDir, 'g')), false, 'nothing was written');
  });
});
