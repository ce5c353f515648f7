package hashring

import (
	"fmt"
	"testing"
)

func TestPickIsStableAndMovesLittle(t *testing.T) {
	var r Ring
	if _, ok := r.Pick("acme"); ok {
		t.Fatal("an empty ring picked a member")
	}
	r.Set([]string{"h1:1", "h2:1", "h3:1"})
	before := map[string]string{}
	counts := map[string]int{}
	for i := 0; i < 3000; i++ {
		k := fmt.Sprintf("tenant-%d", i)
		m, _ := r.Pick(k)
		before[k] = m
		counts[m]++
	}
	for m, n := range counts {
		if n < 700 {
			t.Fatalf("member %s owns only %d of 3000 tenants: badly spread %v", m, n, counts)
		}
	}
	// Removing h3 moves only h3's tenants.
	r.Set([]string{"h1:1", "h2:1"})
	for k, was := range before {
		now, _ := r.Pick(k)
		if was != "h3:1" && now != was {
			t.Fatalf("tenant %s moved from %s to %s though its owner stayed", k, was, now)
		}
	}
}
