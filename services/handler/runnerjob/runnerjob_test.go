package runnerjob

import (
	"strings"
	"testing"

	nomad "github.com/hashicorp/nomad/api"
)

func TestFailureMessage(t *testing.T) {
	const denied = `failed to launch command with executor: rpc error: code = Unknown desc = exec: "/usr/bin/node": stat /usr/bin/node: permission denied`
	ev := func(typ string, at int64, set func(*nomad.TaskEvent)) *nomad.TaskEvent {
		e := &nomad.TaskEvent{Type: typ, Time: at}
		if set != nil {
			set(e)
		}
		return e
	}
	alloc := func(status string, events ...*nomad.TaskEvent) *nomad.Allocation {
		return &nomad.Allocation{ID: "a1", ClientStatus: status, DesiredStatus: nomad.AllocDesiredStatusRun,
			TaskStates: map[string]*nomad.TaskState{"runner": {State: "dead", Failed: true, Events: events}}}
	}
	tests := []struct {
		name  string
		alloc *nomad.Allocation
		want  string
	}{
		{"driver failure wins over the events around it", alloc(nomad.AllocClientStatusFailed,
			ev(nomad.TaskReceived, 1, func(e *nomad.TaskEvent) { e.DisplayMessage = "Task received by client" }),
			ev(nomad.TaskDriverFailure, 2, func(e *nomad.TaskEvent) { e.DisplayMessage = denied; e.FailsTask = true }),
			ev(nomad.TaskNotRestarting, 3, func(e *nomad.TaskEvent) { e.DisplayMessage = "Error was unrecoverable" }),
		), "Driver Failure: " + denied},
		{"no display message: the driver error", alloc(nomad.AllocClientStatusFailed,
			ev(nomad.TaskDriverFailure, 2, func(e *nomad.TaskEvent) { e.DriverError = denied }),
		), "Driver Failure: " + denied},
		{"setup failure by its setup error", alloc(nomad.AllocClientStatusFailed,
			ev(nomad.TaskSetupFailure, 2, func(e *nomad.TaskEvent) { e.SetupError = "failed to build task directory" }),
		), "Setup Failure: failed to build task directory"},
		{"failed hook by its message", alloc(nomad.AllocClientStatusFailed,
			ev("Task hook failed", 2, func(e *nomad.TaskEvent) { e.Message = "prestart hook \"volumes\" failed: no such host volume" }),
		), `Task hook failed: prestart hook "volumes" failed: no such host volume`},
		{"the task's exit over the refusal to restart", alloc(nomad.AllocClientStatusFailed,
			ev(nomad.TaskStarted, 1, nil),
			ev(nomad.TaskTerminated, 2, func(e *nomad.TaskEvent) { e.DisplayMessage = "Exit Code: 1"; e.ExitCode = 1 }),
			ev(nomad.TaskNotRestarting, 3, func(e *nomad.TaskEvent) { e.DisplayMessage = "Policy allows no restarts" }),
		), "Terminated: Exit Code: 1"},
		{"the latest of equal failures", alloc(nomad.AllocClientStatusFailed,
			ev(nomad.TaskDriverFailure, 5, func(e *nomad.TaskEvent) { e.DisplayMessage = "second" }),
			ev(nomad.TaskDriverFailure, 2, func(e *nomad.TaskEvent) { e.DisplayMessage = "first" }),
		), "Driver Failure: second"},
		{"nothing telling", alloc(nomad.AllocClientStatusComplete,
			ev(nomad.TaskReceived, 1, nil), ev(nomad.TaskStarted, 2, nil),
		), ""},
		{"no task states", &nomad.Allocation{ID: "a1", ClientStatus: nomad.AllocClientStatusLost}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := failureMessage(tt.alloc); got != tt.want {
				t.Fatalf("failureMessage = %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestFailureMessageBounded(t *testing.T) {
	long := strings.Repeat("é", 400) // 800 bytes, two per rune
	a := &nomad.Allocation{ClientStatus: nomad.AllocClientStatusFailed, TaskStates: map[string]*nomad.TaskState{
		"runner": {Events: []*nomad.TaskEvent{{Type: nomad.TaskDriverFailure, DisplayMessage: long}}},
	}}
	got := failureMessage(a)
	if len(got) > maxFailure || !strings.HasPrefix(got, "Driver Failure: é") || !strings.HasSuffix(got, "é") {
		t.Fatalf("failureMessage of a long error = %d bytes %q..., want at most %d bytes cut between runes", len(got), got[:40], maxFailure)
	}
}

func TestToAllocFailureOnlyWhenTerminal(t *testing.T) {
	events := []*nomad.TaskEvent{{Type: nomad.TaskDriverFailure, DisplayMessage: "boom", FailsTask: true}}
	running := &nomad.Allocation{ID: "a1", ClientStatus: nomad.AllocClientStatusPending, DesiredStatus: nomad.AllocDesiredStatusRun,
		TaskStates: map[string]*nomad.TaskState{"runner": {Events: events}}}
	if a := toAlloc(running); a.Terminal || a.Failure != "" {
		t.Fatalf("pending allocation = %+v, want no failure", a)
	}
	failed := *running
	failed.ClientStatus = nomad.AllocClientStatusFailed
	if a := toAlloc(&failed); !a.Terminal || a.Failure != "Driver Failure: boom" {
		t.Fatalf("failed allocation = %+v, want its driver failure", a)
	}
}

func TestReservation(t *testing.T) {
	i := func(v int) *int { return &v }
	job := &nomad.Job{TaskGroups: []*nomad.TaskGroup{{
		EphemeralDisk: &nomad.EphemeralDisk{SizeMB: i(150)},
		Tasks:         []*nomad.Task{{Name: "runner", Resources: &nomad.Resources{CPU: i(10), MemoryMB: i(64), MemoryMaxMB: i(256)}}},
	}}}
	if got, want := reservation(job), (Resources{MemoryMB: 64, CPUMHz: 10, DiskMB: 150}); got != want {
		t.Fatalf("reservation = %+v, want %+v (memory, not memory_max)", got, want)
	}
	bare := &nomad.Job{TaskGroups: []*nomad.TaskGroup{{Count: i(2), Tasks: []*nomad.Task{{Name: "t"}}}}}
	if got, want := reservation(bare), (Resources{MemoryMB: 600, CPUMHz: 200, DiskMB: 600}); got != want {
		t.Fatalf("reservation of a job with Nomad's defaults = %+v, want %+v", got, want)
	}
}

func TestAllocatable(t *testing.T) {
	node := &nomad.Node{
		NodeResources: &nomad.NodeResources{
			Cpu: nomad.NodeCpuResources{CpuShares: 5192}, Memory: nomad.NodeMemoryResources{MemoryMB: 24105},
			Disk: nomad.NodeDiskResources{DiskMB: 258019},
		},
		ReservedResources: &nomad.NodeReservedResources{
			Cpu: nomad.NodeReservedCpuResources{CpuShares: 192}, Memory: nomad.NodeReservedMemoryResources{MemoryMB: 105},
		},
	}
	if got, want := allocatable(node), (Resources{MemoryMB: 24000, CPUMHz: 5000, DiskMB: 258019}); got != want {
		t.Fatalf("allocatable = %+v, want %+v", got, want)
	}
}

func TestOversubscriptionOff(t *testing.T) {
	warning := `1 warning:

* Memory oversubscription is not enabled; Task "runner.runner" memory_max value will be ignored. Update the Scheduler Configuration to allow oversubscription.`
	if !oversubscriptionOff(warning) || oversubscriptionOff("") || oversubscriptionOff("* Group \"runner\" has no update block") {
		t.Fatal("oversubscriptionOff misreads Nomad's warnings")
	}
}
