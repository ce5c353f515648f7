package pool

import "github.com/fnhook/fnhook/services/handler/runnerjob"

// CapacityCap bounds the runners of one node whatever its size: each runner costs the
// handler a health check every 2 s, Consul an HTTP check every 5 s, the node a bridge
// address and a mapped port, and about a second of CPU to start; past a few hundred on a
// node, those costs and the blast radius of losing the node outweigh one more tenant kept
// warm. An operator who wants more sets FNHOOK_POOL_MAX_RUNNERS.
const CapacityCap = 512

// Capacity returns how many runners a node holds: for each resource Nomad places runners
// by (memory, CPU, disk), what the node can allocate less the headroom kept for what is
// not a runner (the platform's services), divided by what one runner reserves; the
// smallest of those, at most CapacityCap. bound names the resource (or "cap") that sets
// it. The result may be 0 when not even one runner fits.
func Capacity(node, headroom, perRunner runnerjob.Resources) (n int, bound string) {
	n, bound = CapacityCap, "cap"
	for _, d := range []struct {
		name            string
		have, keep, per int
	}{
		{"memory", node.MemoryMB, headroom.MemoryMB, perRunner.MemoryMB},
		{"cpu", node.CPUMHz, headroom.CPUMHz, perRunner.CPUMHz},
		{"disk", node.DiskMB, headroom.DiskMB, perRunner.DiskMB},
	} {
		if d.per <= 0 {
			continue
		}
		if k := max(0, d.have-d.keep) / d.per; k < n {
			n, bound = k, d.name
		}
	}
	return n, bound
}
