package scenario

import (
	"testing"
	"time"

	"github.com/fnhook/fnhook/bench/proc"
	"github.com/fnhook/fnhook/bench/report"
)

func use(cpuMs, vol, invol int64) proc.Usage {
	return proc.Usage{CPU: time.Duration(cpuMs) * time.Millisecond, Voluntary: vol, Involuntary: invol}
}

func TestBusiest(t *testing.T) {
	type runners = map[string]map[string]proc.Usage
	before := runners{
		"a": {proc.RoleParent: use(100, 0, 0), proc.RoleChild: use(100, 0, 0)},
		"b": {proc.RoleParent: use(5000, 0, 0), proc.RoleChild: use(5000, 0, 0)},
		"c": {proc.RoleParent: use(0, 0, 0)},
	}
	tests := []struct {
		name          string
		before, after runners
		want          string
	}{
		// b has used more in all, a more in the window.
		{"the most CPU in the window, not in all", before, runners{
			"a": {proc.RoleParent: use(900, 0, 0), proc.RoleChild: use(700, 0, 0)},
			"b": {proc.RoleParent: use(5100, 0, 0), proc.RoleChild: use(5000, 0, 0)},
			"c": {proc.RoleParent: use(10, 0, 0)},
		}, "a"},
		{"a runner gone by the end is not chosen", before, runners{
			"b": {proc.RoleParent: use(5001, 0, 0), proc.RoleChild: use(5000, 0, 0)},
		}, "b"},
		{"a runner new at the end is not chosen", runners{}, runners{"a": {proc.RoleParent: use(1, 0, 0)}}, ""},
		{"ties go to the first id", before, before, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := busiest(tt.before, tt.after); got != tt.want {
				t.Fatalf("busiest = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestProbeCost(t *testing.T) {
	p := &costProbe{gateway: []int{300}, runners: map[string]map[string][]int{
		"a": {proc.RoleParent: {400}, proc.RoleChild: {401}},
		"b": {proc.RoleParent: {500}, proc.RoleChild: {501}},
	}}
	r0 := reading{gateway: use(1000, 5000, 10), runners: map[string]map[string]proc.Usage{
		"a": {proc.RoleParent: use(50, 10, 0), proc.RoleChild: use(50, 10, 0)},
		"b": {proc.RoleParent: use(50, 10, 0), proc.RoleChild: use(50, 10, 0)},
	}}
	r1 := reading{gateway: use(1500, 7000, 30), runners: map[string]map[string]proc.Usage{
		"a": {proc.RoleParent: use(51, 11, 0), proc.RoleChild: use(50, 10, 0)},
		"b": {proc.RoleParent: use(1050, 4010, 0), proc.RoleChild: use(850, 2010, 10)},
	}}
	c := p.cost(r0, r1, 10000)
	if c.Error != "" || c.Calls != 10000 {
		t.Fatalf("cost %+v", c)
	}
	want := map[string]struct {
		pid           int
		us, switches  float64
		vol, involunt int64
	}{
		report.ProcGateway:      {300, 50, 0.202, 2000, 20},
		report.ProcRunnerParent: {500, 100, 0.4, 4000, 0},
		report.ProcRunnerChild:  {501, 80, 0.201, 2000, 10},
	}
	if len(c.Processes) != len(want) {
		t.Fatalf("processes %+v, want %d", c.Processes, len(want))
	}
	for name, w := range want {
		got := c.Of(name)
		if got == nil || got.PIDs[0] != w.pid || got.CPUUsPerCall != w.us || got.SwitchesPerCall != w.switches ||
			got.Voluntary != w.vol || got.Involuntary != w.involunt {
			t.Errorf("%s: %+v, want %+v", name, got, w)
		}
	}

	r0.err = errTest
	if c := p.cost(r0, r1, 10000); c.Error == "" || c.Of(report.ProcGateway) != nil || c.Of(report.ProcRunnerParent) == nil {
		t.Errorf("gateway unreadable: %+v, want an error and the runner's figures", c)
	}
}

type testError string

func (e testError) Error() string { return string(e) }

const errTest = testError("no such process")
