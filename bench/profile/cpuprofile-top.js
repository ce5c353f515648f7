// Summarises V8 .cpuprofile files (from `node --cpu-prof`): the functions with the most
// self time, merged by name and location. Usage: node cpuprofile-top.js FILE... [--top N]
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const args = process.argv.slice(2);
let top = 25;
const i = args.indexOf('--top');
if (i >= 0) { top = Number(args[i + 1]); args.splice(i, 2); }

for (const file of args) {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let total = 0;
  prof.samples.forEach((id, k) => {
    const dt = prof.timeDeltas[k] || 0;
    total += dt;
    const cf = byId.get(id).callFrame;
    const where = cf.url ? path.basename(cf.url) + ':' + (cf.lineNumber + 1) : '';
    const key = (cf.functionName || '(anonymous)') + (where ? ' ' + where : '');
    self.set(key, (self.get(key) || 0) + dt);
  });
  const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  console.log('### ' + path.basename(file) + ' (' + (total / 1e6).toFixed(2) + ' s sampled)\n');
  console.log('| self % | self ms | function |\n|--:|--:|---|');
  for (const [key, us] of rows) {
    console.log('| ' + (100 * us / total).toFixed(1) + ' | ' + (us / 1000).toFixed(0) + ' | `' + key + '` |');
  }
  console.log('');
}
