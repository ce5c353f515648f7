package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/testinfra"
)

func TestFunctionConditionalWrites(t *testing.T) {
	t.Parallel()
	env := testinfra.Start(t)
	s := env.Store(t)
	ctx := context.Background()

	f := fnhook.Function{Tenant: "acme", Name: "hello", Version: 1, Code: "module.exports = () => 1", Status: fnhook.StatusReady}
	if err := s.PutFunction(ctx, f, 0); err != nil {
		t.Fatalf("create: %v", err)
	}
	// A second create of the same function is rejected by the condition.
	if err := s.PutFunction(ctx, f, 0); fnhook.ErrorCode(err) != fnhook.CodeConflict {
		t.Fatalf("second create: got %v, want conflict", err)
	}
	got, err := s.GetFunction(ctx, "acme", "hello")
	if err != nil || got.Version != 1 || got.Code != f.Code {
		t.Fatalf("get: %+v %v", got, err)
	}

	// Ten writers race from version 1: exactly one wins.
	var wins int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			g := f
			g.Version = 2
			g.Code = "module.exports = () => " + string(rune('a'+i))
			if err := s.PutFunction(ctx, g, 1); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if fnhook.ErrorCode(err) != fnhook.CodeConflict {
				t.Errorf("racing put: %v", err)
			}
		}(i)
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d writers won the race from version 1, want exactly 1", wins)
	}
	if err := s.DeleteFunction(ctx, "acme", "hello", 1); fnhook.ErrorCode(err) != fnhook.CodeConflict {
		t.Fatalf("delete at stale version: got %v, want conflict", err)
	}
	if err := s.DeleteFunction(ctx, "acme", "hello", 2); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := s.GetFunction(ctx, "acme", "hello"); fnhook.ErrorCode(err) != fnhook.CodeNotFound {
		t.Fatalf("get after delete: got %v, want not_found", err)
	}
}

func TestListFunctionsPaginates(t *testing.T) {
	t.Parallel()
	env := testinfra.Start(t)
	s := env.Store(t)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		if err := s.PutFunction(ctx, fnhook.Function{Tenant: "acme", Name: n, Version: 1}, 0); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	after := ""
	for range 10 {
		page, next, err := s.ListFunctions(ctx, "acme", 2, after)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range page {
			names = append(names, f.Name)
		}
		if next == "" {
			break
		}
		after = next
	}
	if got := len(names); got != 5 || names[0] != "a" || names[4] != "e" {
		t.Fatalf("paged names %v, want a..e", names)
	}
	if n, err := s.CountFunctions(ctx, "acme"); err != nil || n != 5 {
		t.Fatalf("count = %d, %v", n, err)
	}
}

func TestModuleClaim(t *testing.T) {
	t.Parallel()
	env := testinfra.Start(t)
	s := env.Store(t)
	ctx := context.Background()

	if _, ok, err := s.ClaimModule(ctx, "dayjs", "1.11.13", "builder-a", time.Minute); err != nil || !ok {
		t.Fatalf("first claim: ok=%v err=%v", ok, err)
	}
	cur, ok, err := s.ClaimModule(ctx, "dayjs", "1.11.13", "builder-b", time.Minute)
	if err != nil || ok {
		t.Fatalf("second claim under a live claim: ok=%v err=%v, want refused", ok, err)
	}
	if cur.Owner != "builder-a" {
		t.Fatalf("current owner %q, want builder-a", cur.Owner)
	}
	// An expired claim is taken over.
	if _, ok, err := s.ClaimModule(ctx, "left", "1.0.0", "dead", time.Millisecond); err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	time.Sleep(20 * time.Millisecond)
	if _, ok, err := s.ClaimModule(ctx, "left", "1.0.0", "alive", time.Minute); err != nil || !ok {
		t.Fatalf("takeover of an expired claim: ok=%v err=%v", ok, err)
	}
	m := fnhook.Module{Name: "dayjs", Version: "1.11.13", Status: fnhook.ModuleReady, SHA256: "ab", Size: 3}
	if err := s.FinishModule(ctx, m); err != nil {
		t.Fatalf("finish: %v", err)
	}
	if _, ok, _ := s.ClaimModule(ctx, "dayjs", "1.11.13", "builder-b", time.Minute); ok {
		t.Fatal("a ready module was claimed again")
	}
	got, found, err := s.GetModule(ctx, "dayjs", "1.11.13")
	if err != nil || !found || got.Status != fnhook.ModuleReady || got.SHA256 != "ab" {
		t.Fatalf("module record %+v found=%v err=%v", got, found, err)
	}
}

func TestTenantDeleteRemovesEverything(t *testing.T) {
	t.Parallel()
	env := testinfra.Start(t)
	s := env.Store(t)
	ctx := context.Background()
	if err := s.PutTenant(ctx, fnhook.Tenant{Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutToken(ctx, fnhook.Token{ID: "t1", Tenant: "gone", Hash: "h"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutFunction(ctx, fnhook.Function{Tenant: "gone", Name: "f", Version: 1}, 0); err != nil {
		t.Fatal(err)
	}
	fns, err := s.DeleteTenant(ctx, "gone")
	if err != nil || len(fns) != 1 {
		t.Fatalf("delete tenant: %d functions, %v", len(fns), err)
	}
	if _, err := s.GetTenant(ctx, "gone"); fnhook.ErrorCode(err) != fnhook.CodeNotFound {
		t.Fatalf("tenant still there: %v", err)
	}
	if _, err := s.GetToken(ctx, "gone", "t1"); fnhook.ErrorCode(err) != fnhook.CodeNotFound {
		t.Fatalf("token still there: %v", err)
	}
}
