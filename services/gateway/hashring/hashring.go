// Package hashring picks the handler that owns a tenant by rendezvous (highest random
// weight) hashing: every gateway picks the same handler for a tenant, and when a handler
// joins or leaves only the tenants it owns move.
package hashring

import (
	"hash/fnv"
	"sync/atomic"
)

// Ring is a set of members that can change while it is read. Safe for concurrent use.
type Ring struct {
	members atomic.Pointer[[]string]
}

// Set replaces the members (e.g. the healthy handler addresses from Consul).
func (r *Ring) Set(members []string) {
	m := append([]string(nil), members...)
	r.members.Store(&m)
}

// Members returns the current members.
func (r *Ring) Members() []string {
	if p := r.members.Load(); p != nil {
		return *p
	}
	return nil
}

// Pick returns the member that owns key, or false when there is none.
func (r *Ring) Pick(key string) (string, bool) {
	var best string
	var bestScore uint64
	for _, m := range r.Members() {
		h := fnv.New64a()
		h.Write([]byte(m))
		h.Write([]byte{0})
		h.Write([]byte(key))
		if s := mix(h.Sum64()); best == "" || s > bestScore {
			best, bestScore = m, s
		}
	}
	return best, best != ""
}

// mix spreads FNV's output (splitmix64 finaliser) so scores are well distributed.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
