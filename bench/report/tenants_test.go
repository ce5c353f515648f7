package report

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAnswerOutcome(t *testing.T) {
	tests := []struct {
		name string
		a    Answer
		want string
	}{
		{"ok", Answer{Status: 200}, "200"},
		{"ok with a code is still 200", Answer{Status: 200, Code: "x"}, "200"},
		{"error with a code", Answer{Status: 503, Code: "no_capacity"}, "503 no_capacity"},
		{"error without a JSON body", Answer{Status: 502}, "502"},
		{"no answer", Answer{Err: errors.New("connection refused")}, OutcomeNoAnswer},
		{"no status", Answer{}, OutcomeNoAnswer},
	}
	for _, tt := range tests {
		if got := tt.a.Outcome(); got != tt.want {
			t.Errorf("%s: Outcome() = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestNewRound(t *testing.T) {
	ms := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
	answers := []Answer{
		{Status: 200, Cold: true, Latency: ms(10)},
		{Status: 200, Cold: true, Latency: ms(30)},
		{Status: 200, Latency: ms(20)},
		{Status: 503, Code: "no_capacity", Latency: ms(20000), Detail: `{"error":{"code":"no_capacity"}}`},
		{Status: 503, Code: "no_capacity", RetryAfter: true, Latency: ms(19000)},
		{Status: 503, Code: "overloaded", RetryAfter: true, Latency: ms(1)},
		{Status: 500, Code: "internal", Latency: ms(5)},
		{Err: errors.New("EOF"), Latency: ms(90000)},
	}
	r := NewRound(answers, 2, 1500*time.Millisecond)
	if r.Calls != 8 || r.OK != 3 || r.NotOK != 5 || r.NotSent != 2 || r.Cold != 2 || r.NoRetryAfter != 1 || r.Seconds != 1.5 {
		t.Fatalf("round %+v", r)
	}
	want := map[string]int{"200": 3, "503 no_capacity": 2, "503 overloaded": 1, "500 internal": 1, OutcomeNoAnswer: 1}
	if len(r.Outcomes) != len(want) {
		t.Fatalf("outcomes %v, want %v", r.Outcomes, want)
	}
	for k, v := range want {
		if r.Outcomes[k] != v {
			t.Errorf("outcome %q: %d, want %d", k, r.Outcomes[k], v)
		}
	}
	// Latency is every answered call (the one without an answer is left out); LatencyOK the 200s.
	if r.Latency.N != 7 || r.Latency.Max != 20000 || r.LatencyOK.N != 3 || r.LatencyOK.P50 != 20 || r.LatencyOK.Max != 30 {
		t.Errorf("latency %+v, ok %+v", r.Latency, r.LatencyOK)
	}
	if !strings.HasPrefix(r.FirstError, "503 no_capacity: {") {
		t.Errorf("first error %q", r.FirstError)
	}
	if got := r.NotOKOutcomes(); got != "503 no_capacity: 2, 500 internal: 1, 503 overloaded: 1, no answer: 1, not sent (round time limit): 2" {
		t.Errorf("NotOKOutcomes() = %q", got)
	}
}

func TestNewRoundAllOK(t *testing.T) {
	r := NewRound([]Answer{{Status: 200}, {Status: 200}}, 0, time.Second)
	if r.OK != 2 || r.NotOK != 0 || r.FirstError != "" || r.NotOKOutcomes() != "" {
		t.Fatalf("round %+v, outcomes %q", r, r.NotOKOutcomes())
	}
	if r := NewRound(nil, 0, 0); r.Calls != 0 || r.Latency.N != 0 || r.Outcomes == nil {
		t.Fatalf("empty round %+v", r)
	}
}

func TestTenantsTarget(t *testing.T) {
	const name = "40 new tenants, 8 at a time, 2 rounds: answers other than 200"
	round := func(ok, notOK, notSent int) Round {
		return Round{Calls: ok + notOK, OK: ok, NotOK: notOK, NotSent: notSent}
	}
	tests := []struct {
		name      string
		runs      []Tenants
		want      string
		wantValue float64
	}{
		{"all 200", []Tenants{{N: 40, Concurrency: 8, Target: true, First: round(40, 0, 0), Second: round(40, 0, 0)}}, Met, 0},
		{"one 503 in the second round", []Tenants{{N: 40, Concurrency: 8, Target: true, First: round(40, 0, 0), Second: round(39, 1, 0)}}, Missed, 1},
		{"the issue's finding", []Tenants{{N: 40, Concurrency: 8, Target: true, First: round(12, 28, 0), Second: round(12, 28, 0)}}, Missed, 56},
		{"calls not sent count", []Tenants{{N: 40, Concurrency: 8, Target: true, First: round(30, 0, 10), Second: round(40, 0, 0)}}, Missed, 10},
		{"the run failed", []Tenants{{N: 40, Concurrency: 8, Target: true, Error: "deploy failed"}}, NotMeasured, 0},
		{"a round missing", []Tenants{{N: 40, Concurrency: 8, Target: true, First: round(40, 0, 0)}}, NotMeasured, 0},
		{"no target run", []Tenants{{N: 200, Concurrency: 8, First: round(200, 0, 0), Second: round(200, 0, 0)}}, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sample()
			r.Tenants = tt.runs
			r.Compute()
			var got *Check
			for i := range r.Targets {
				if r.Targets[i].Name == name {
					got = &r.Targets[i]
				}
			}
			if tt.want == "" {
				if got != nil || len(r.Targets) != 8 {
					t.Fatalf("targets %+v, want no tenants check", r.Targets)
				}
				return
			}
			if got == nil || got.Status != tt.want || got.Value != tt.wantValue || got.Goal != "0 of 80" {
				t.Fatalf("check %+v, want %s with %g", got, tt.want, tt.wantValue)
			}
		})
	}
}

func TestMarkdownManyTenants(t *testing.T) {
	r := sample()
	r.Runners = &Runners{
		Memory: []RunnerMemory{{When: "at rest (pool quiet)", Runners: 3, PoolIdle: 2, PoolAssigned: 1, PssMB: 53.7, PssMinMB: 52.6, PssMaxMB: 54.7,
			RssMB: 301, WithLogmon: 3, RoleMB: map[string]float64{"executor": 17.8, "logmon": 16.1, "parent": 10.9, "child": 8.9}}},
		Start: &RunnerStart{Starts: 8, Measured: 8, WindowS: 6, CPUS: 0.493, AgentS: 0.183, AgentIdleCPUPerS: 0.064,
			ExecutorS: 0.049, LogmonS: 0.041, TaskS: 0.22, ReapedDuringWindow: 2},
	}
	r.Burst = &Burst{N: 40, First: NewRound([]Answer{{Status: 200, Latency: time.Second}, {Status: 503, Code: "no_capacity"}}, 0, 2*time.Second)}
	r.Tenants = []Tenants{
		{N: 40, Concurrency: 8, Target: true, First: Round{Calls: 40, OK: 40, Outcomes: map[string]int{"200": 40}},
			Second: Round{Calls: 40, OK: 40, Outcomes: map[string]int{"200": 40}}},
		{N: 200, Concurrency: 8, Error: "deploy tenant x: 500"},
	}
	r.Compute()
	var b strings.Builder
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		"| at rest (pool quiet) | 3 | 2 / 1 | 53.7 | 52.6 | 54.7 | 17.8 | 16.1 | 10.9 | 8.9 | 3 | 301.0 |",
		"| **total** | **0.493** |",
		"2 nomad processes of other allocations exited meanwhile",
		"### Burst: 40 new tenants, first calls sent all at once",
		"| first call | 2 | 1 | 1 | 503 no_capacity: 1 | 0 | 1 |",
		"| 40 tenants, 8 at a time (target run) | first | 40 | 40 | 0 | - |",
		"| 200 tenants, 8 at a time | - | failed: deploy tenant x: 500 |",
		"| 40 new tenants, 8 at a time, 2 rounds: answers other than 200 | 0 of 80 | 0 | **met** |",
	} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("markdown lacks %q:\n%s", w, b.String())
		}
	}
	if got := r.Failed(); len(got) != 1 || got[0] != "tenants (200): deploy tenant x: 500" {
		t.Errorf("Failed() = %q", got)
	}
}

func TestMarkdownOnlySomeSections(t *testing.T) {
	r := sample()
	r.Settings.Only = []string{SectionBurst}
	r.Burst = &Burst{N: 2, First: NewRound([]Answer{{Status: 200}, {Status: 200}}, 0, time.Second)}
	r.Compute()
	var b strings.Builder
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{"### Warm", "### Cold", "### Function create", "### Ratios", "naive"} {
		if strings.Contains(b.String(), absent) {
			t.Errorf("markdown of a burst-only run has %q:\n%s", absent, b.String())
		}
	}
	if !strings.Contains(b.String(), "### Burst") || !r.Ran(SectionBurst) || r.Ran(SectionWarm) {
		t.Errorf("burst-only run:\n%s", b.String())
	}
}
