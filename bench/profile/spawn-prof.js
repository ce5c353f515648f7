// Preloaded (`node -r`) into a local runner for profiling only: adds --cpu-prof to the child
// that runs tenant code, whose environment the runner builds from nothing (so NODE_OPTIONS
// cannot reach it). The profile lands in FNHOOK_PROF_DIR when the child exits.
'use strict';
const cp = require('node:child_process');
const dir = process.env.FNHOOK_PROF_DIR;
const spawn = cp.spawn;
cp.spawn = function (cmd, args, opts) {
  if (cmd === process.execPath && Array.isArray(args)) args = ['--cpu-prof', '--cpu-prof-dir=' + dir, '--cpu-prof-name=child.cpuprofile', ...args];
  return spawn.call(this, cmd, args, opts);
};
