// Package runnerjob runs warm runners as Nomad jobs: one job per runner, made from the job
// template (jobs/runner.nomad.hcl) parsed by the Nomad API with per-runner variables. It
// registers and stops those jobs, lists the ones a handler owns, and reports their
// allocations from Nomad's event stream.
package runnerjob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	nomad "github.com/hashicorp/nomad/api"
)

// PortLabel is the port of the runner group that the runner listens on.
const PortLabel = "http"

// Config describes the runners a handler starts.
type Config struct {
	// Template is the HCL2 text of the runner job.
	Template string
	// Prefix starts every runner job id: <Prefix>-<node8>-<random>.
	Prefix string
	// NodeID is the Nomad node the runners are pinned to (the handler's own).
	NodeID      string
	Datacenters []string
	// Namespace is the Nomad namespace of runner jobs ("" keeps the client's). A namespace
	// of their own lets the handler's ACL token touch runner jobs and nothing else.
	Namespace string
	// SizeClass, MemoryMB, MemoryReserveMB, HeapMB and CPUMHz describe the one size class
	// of the pool: MemoryMB is a runner's hard limit (memory_max), MemoryReserveMB what it
	// reserves on its node (memory), which Nomad places it by.
	SizeClass       string
	MemoryMB        int
	MemoryReserveMB int
	HeapMB          int
	CPUMHz          int
}

// Resources is an amount of what Nomad places allocations by.
type Resources struct {
	MemoryMB int
	CPUMHz   int
	DiskMB   int
}

// Alloc is what the handler needs to know about a runner's allocation.
type Alloc struct {
	ID string
	// Address is host:port of the runner's mapped port; empty until Nomad placed it.
	Address string
	// ClientStatus is Nomad's (pending, running, complete, failed, lost).
	ClientStatus string
	// Terminal is true once the allocation stopped or is told to stop.
	Terminal bool
	// Failure is Nomad's own account of why a terminal allocation stopped (see
	// failureMessage), e.g. "Driver Failure: failed to launch command with executor: ...";
	// empty while the allocation lives or when its tasks recorded nothing telling.
	Failure string
}

// Job is a runner job found on Nomad.
type Job struct {
	ID string
	// Alloc is its live allocation, if any.
	Alloc *Alloc
	// Dead is true when the job is stopped or finished (left for purging).
	Dead bool
}

// Nomad registers and watches runner jobs. It is safe for concurrent use.
type Nomad struct {
	c       *nomad.Client
	cfg     Config
	log     *slog.Logger
	prefix  string
	reserve Resources // what one runner reserves, read from the parsed template

	purges sync.WaitGroup
	slots  chan struct{} // bounds the background purges
}

// New returns a Nomad for cfg and checks the template by parsing it once through the
// Nomad API, so a broken template stops the handler at start with the parser's message.
// It then asks Nomad to validate the job: where memory oversubscription is off, Nomad
// ignores memory_max, and the runner's limit would be its reservation, so runners then
// reserve their whole limit (MemoryReserveMB = MemoryMB) and a warning says so.
func New(ctx context.Context, c *nomad.Client, cfg Config, log *slog.Logger) (*Nomad, error) {
	if len(cfg.NodeID) < 8 {
		return nil, fmt.Errorf("runner jobs: node id %q is too short", cfg.NodeID)
	}
	if cfg.MemoryReserveMB <= 0 || cfg.MemoryReserveMB > cfg.MemoryMB {
		cfg.MemoryReserveMB = cfg.MemoryMB
	}
	n := &Nomad{c: c, cfg: cfg, log: log, prefix: cfg.Prefix + "-" + cfg.NodeID[:8] + "-", slots: make(chan struct{}, 32)}
	job, err := n.parse(ctx, n.prefix+"check", "check")
	if err != nil {
		return nil, err
	}
	if n.cfg.MemoryReserveMB < n.cfg.MemoryMB {
		ignored, err := n.memoryMaxIgnored(ctx, job)
		if err != nil {
			// Not fatal: the runners still start, limited by their reservation if
			// oversubscription turns out to be off.
			log.Warn("could not ask nomad whether memory oversubscription is on", "err", err)
		}
		if ignored {
			log.Warn("nomad's memory oversubscription is off: runners reserve their whole memory limit, and the node holds fewer",
				"memory_mb", n.cfg.MemoryMB, "memory_reserve_mb_asked", n.cfg.MemoryReserveMB)
			n.cfg.MemoryReserveMB = n.cfg.MemoryMB
			if job, err = n.parse(ctx, n.prefix+"check", "check"); err != nil {
				return nil, err
			}
		}
	}
	n.reserve = reservation(job)
	n.describe(job)
	return n, nil
}

// Reservation returns what one runner reserves on its node, as its parsed job asks.
func (n *Nomad) Reservation() Resources { return n.reserve }

// memoryMaxIgnored asks Nomad to validate the job and tells whether it warns that
// memory_max will be ignored (memory oversubscription is off in the scheduler).
func (n *Nomad) memoryMaxIgnored(ctx context.Context, job *nomad.Job) (bool, error) {
	resp, _, err := n.c.Jobs().Validate(job, (&nomad.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("validate the runner job: %w", err)
	}
	if resp.Error != "" {
		return false, fmt.Errorf("validate the runner job: %s", resp.Error)
	}
	return oversubscriptionOff(resp.Warnings), nil
}

// oversubscriptionOff tells whether Nomad's job warnings say memory_max is ignored.
func oversubscriptionOff(warnings string) bool {
	return strings.Contains(warnings, "Memory oversubscription is not enabled")
}

// Nomad's defaults for what a job leaves unset.
const (
	defaultCPU    = 100
	defaultMemory = 300
	defaultDisk   = 300
)

// reservation adds up what the job's groups reserve on a node: tasks' memory and CPU, the
// groups' ephemeral disk.
func reservation(job *nomad.Job) Resources {
	var r Resources
	for _, tg := range job.TaskGroups {
		count := 1
		if tg.Count != nil && *tg.Count > 0 {
			count = *tg.Count
		}
		var g Resources
		g.DiskMB = defaultDisk
		if tg.EphemeralDisk != nil && tg.EphemeralDisk.SizeMB != nil {
			g.DiskMB = *tg.EphemeralDisk.SizeMB
		}
		for _, t := range tg.Tasks {
			cpu, mem := defaultCPU, defaultMemory
			if t.Resources != nil && t.Resources.CPU != nil {
				cpu = *t.Resources.CPU
			}
			if t.Resources != nil && t.Resources.MemoryMB != nil {
				mem = *t.Resources.MemoryMB
			}
			g.CPUMHz += cpu
			g.MemoryMB += mem
		}
		r.CPUMHz += count * g.CPUMHz
		r.MemoryMB += count * g.MemoryMB
		r.DiskMB += count * g.DiskMB
	}
	return r
}

// Allocatable returns what Nomad may place on node nodeID: the node's resources minus what
// its agent reserves for the host. It needs a token that may read nodes.
func Allocatable(ctx context.Context, c *nomad.Client, nodeID string) (Resources, error) {
	node, _, err := c.Nodes().Info(nodeID, (&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return Resources{}, fmt.Errorf("read nomad node %s: %w", nodeID, err)
	}
	return allocatable(node), nil
}

func allocatable(node *nomad.Node) Resources {
	var r Resources
	if nr := node.NodeResources; nr != nil {
		r = Resources{MemoryMB: int(nr.Memory.MemoryMB), CPUMHz: int(nr.Cpu.CpuShares), DiskMB: int(nr.Disk.DiskMB)}
	}
	if rr := node.ReservedResources; rr != nil {
		r.MemoryMB -= int(rr.Memory.MemoryMB)
		r.CPUMHz -= int(rr.Cpu.CpuShares)
		r.DiskMB -= int(rr.Disk.DiskMB)
	}
	return r
}

// JobPrefix is what the ids of this handler's runner jobs start with.
func (n *Nomad) JobPrefix() string { return n.prefix }

// NewJobID returns a fresh runner job id.
func (n *Nomad) NewJobID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return n.prefix + hex.EncodeToString(b[:])
}

// Register parses the template with the runner's variables and registers the job.
func (n *Nomad) Register(ctx context.Context, jobID, token string) error {
	job, err := n.parse(ctx, jobID, token)
	if err != nil {
		return err
	}
	if _, _, err := n.c.Jobs().Register(job, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("register runner job %s: %w", jobID, err)
	}
	return nil
}

// Deregister stops the job. In the background it then waits until its allocations are
// complete and purges it: purging at once would drop the allocations from the server's
// view while the client is still stopping them.
func (n *Nomad) Deregister(ctx context.Context, jobID string) error {
	if _, _, err := n.c.Jobs().Deregister(jobID, false, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("stop runner job %s: %w", jobID, err)
	}
	select {
	case n.slots <- struct{}{}:
	default:
		return nil // too many purges waiting: Nomad's own GC collects this one
	}
	n.purges.Add(1)
	go func() {
		defer func() { <-n.slots; n.purges.Done() }()
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 90*time.Second)
		defer cancel()
		if err := n.waitStopped(pctx, jobID); err != nil {
			n.log.Warn("runner job did not stop in time; not purged", "job", jobID, "err", err)
			return
		}
		if _, _, err := n.c.Jobs().Deregister(jobID, true, (&nomad.WriteOptions{}).WithContext(pctx)); err != nil && !isNotFound(err) {
			n.log.Warn("purge runner job", "job", jobID, "err", err)
		}
	}()
	return nil
}

// Purge stops and purges the job at once (tests and cleanup).
func (n *Nomad) Purge(ctx context.Context, jobID string) error {
	_, _, err := n.c.Jobs().Deregister(jobID, true, (&nomad.WriteOptions{}).WithContext(ctx))
	if err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// Wait blocks until the background purges are over (they stop within 90 s).
func (n *Nomad) Wait() { n.purges.Wait() }

// waitStopped waits with blocking queries until no allocation of the job is running.
func (n *Nomad) waitStopped(ctx context.Context, jobID string) error {
	var index uint64
	for {
		q := (&nomad.QueryOptions{WaitIndex: index, WaitTime: 30 * time.Second}).WithContext(ctx)
		allocs, meta, err := n.c.Jobs().Allocations(jobID, true, q)
		if err != nil {
			if isNotFound(err) {
				return nil
			}
			return err
		}
		live := false
		for _, a := range allocs {
			switch a.ClientStatus {
			case nomad.AllocClientStatusComplete, nomad.AllocClientStatusFailed, nomad.AllocClientStatusLost:
			default:
				live = true
			}
		}
		if !live {
			return nil
		}
		index = meta.LastIndex
	}
}

// List returns this handler's runner jobs with their live allocation.
func (n *Nomad) List(ctx context.Context) ([]Job, error) {
	stubs, _, err := n.c.Jobs().List((&nomad.QueryOptions{Prefix: n.prefix}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list runner jobs: %w", err)
	}
	var out []Job
	for _, s := range stubs {
		if !strings.HasPrefix(s.ID, n.prefix) {
			continue
		}
		j := Job{ID: s.ID, Dead: s.Stop || s.Status == "dead"}
		if !j.Dead {
			a, err := n.Alloc(ctx, s.ID)
			if err != nil {
				return nil, err
			}
			j.Alloc = a
		}
		out = append(out, j)
	}
	return out, nil
}

// Alloc returns the job's newest allocation, or nil when it has none yet.
func (n *Nomad) Alloc(ctx context.Context, jobID string) (*Alloc, error) {
	allocs, _, err := n.c.Jobs().Allocations(jobID, false, (&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("allocations of %s: %w", jobID, err)
	}
	var best *nomad.AllocationListStub
	for _, a := range allocs {
		if best == nil || a.CreateIndex > best.CreateIndex {
			best = a
		}
	}
	if best == nil {
		return nil, nil
	}
	// The list leaves out the allocated ports: read the allocation itself.
	a, _, err := n.c.Allocations().Info(best.ID, (&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("allocation %s of %s: %w", best.ID, jobID, err)
	}
	al := toAlloc(a)
	return &al, nil
}

// Watch reads Nomad's event stream of allocations and calls fn for every change to an
// allocation of this handler's runner jobs, until ctx ends. After a broken stream it
// resumes from the last index it saw; onResume is called then (events may have been
// missed, so the caller re-checks what it waits for).
func (n *Nomad) Watch(ctx context.Context, fn func(jobID string, a Alloc), onResume func()) {
	var index uint64
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		events, err := n.c.EventStream().Stream(sctx, map[nomad.Topic][]string{nomad.TopicAllocation: {"*"}}, index, &nomad.QueryOptions{})
		if err == nil {
			if index != 0 && onResume != nil {
				onResume()
			}
			for evs := range events {
				if evs.Err != nil {
					err = evs.Err
					break
				}
				if evs.IsHeartbeat() {
					continue
				}
				backoff = 250 * time.Millisecond
				index = evs.Index
				for i := range evs.Events {
					a, derr := evs.Events[i].Allocation()
					if derr != nil || a == nil || !strings.HasPrefix(a.JobID, n.prefix) {
						continue
					}
					fn(a.JobID, toAlloc(a))
				}
			}
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("nomad event stream broke; resuming", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (n *Nomad) parse(ctx context.Context, jobID, token string) (*nomad.Job, error) {
	vars := variables(map[string]any{
		"job_id":            jobID,
		"node_id":           n.cfg.NodeID,
		"token":             token,
		"datacenters":       n.cfg.Datacenters,
		"size_class":        n.cfg.SizeClass,
		"memory_mb":         n.cfg.MemoryMB,
		"memory_reserve_mb": n.cfg.MemoryReserveMB,
		"heap_mb":           n.cfg.HeapMB,
		"cpu_mhz":           n.cfg.CPUMHz,
	})
	_ = ctx // ParseHCLOpts takes no context; the client's own timeout bounds it.
	job, err := n.c.Jobs().ParseHCLOpts(&nomad.JobsParseRequest{JobHCL: n.cfg.Template, Variables: vars, Canonicalize: false})
	if err != nil {
		return nil, fmt.Errorf("parse the runner job template: %w", err)
	}
	if job.ID == nil || *job.ID != jobID {
		return nil, fmt.Errorf("the runner job template must set id = var.job_id (got %v)", job.ID)
	}
	if n.cfg.Namespace != "" {
		job.Namespace = &n.cfg.Namespace
	}
	return job, nil
}

// describe logs what the template asks of the client, once, so an operator sees it.
func (n *Nomad) describe(job *nomad.Job) {
	for _, tg := range job.TaskGroups {
		var netMode string
		for _, nw := range tg.Networks {
			netMode = nw.Mode
		}
		for _, t := range tg.Tasks {
			var vols []string
			for _, vm := range t.VolumeMounts {
				if vm.Volume != nil && vm.Destination != nil {
					vols = append(vols, *vm.Volume+"->"+*vm.Destination)
				}
			}
			n.log.Info("runner job template", "driver", t.Driver, "user", t.User, "network", netMode,
				"volumes", strings.Join(vols, ","), "command", fmt.Sprint(t.Config["command"]), "args", fmt.Sprint(t.Config["args"]),
				"memory_mb", n.cfg.MemoryMB, "memory_reserve_mb", n.cfg.MemoryReserveMB, "cpu_mhz", n.cfg.CPUMHz, "job_prefix", n.prefix)
		}
	}
}

// variables writes an HCL variables file. Strings are quoted with template sequences
// escaped, so no value can inject HCL.
func variables(vars map[string]any) string {
	var b strings.Builder
	for k, v := range vars {
		b.WriteString(k)
		b.WriteString(" = ")
		switch v := v.(type) {
		case string:
			b.WriteString(hclString(v))
		case int:
			b.WriteString(strconv.Itoa(v))
		case []string:
			b.WriteString("[")
			for i, s := range v {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString(hclString(s))
			}
			b.WriteString("]")
		}
		b.WriteString("\n")
	}
	return b.String()
}

func hclString(s string) string {
	q := strconv.Quote(s)
	q = strings.ReplaceAll(q, "${", "$${")
	return strings.ReplaceAll(q, "%{", "%%{")
}

func address(r *nomad.AllocatedResources) string {
	if r == nil {
		return ""
	}
	for _, p := range r.Shared.Ports {
		if p.Label == PortLabel && p.Value > 0 {
			host := p.HostIP
			if host == "" || host == "0.0.0.0" {
				host = "127.0.0.1"
			}
			return net.JoinHostPort(host, strconv.Itoa(p.Value))
		}
	}
	return ""
}

// toAlloc keeps what the handler needs of a Nomad allocation (from Info or the event
// stream: both carry the task states).
func toAlloc(a *nomad.Allocation) Alloc {
	al := Alloc{
		ID: a.ID, Address: address(a.AllocatedResources), ClientStatus: a.ClientStatus,
		Terminal: terminal(a.ClientStatus, a.DesiredStatus),
	}
	if al.Terminal {
		al.Failure = failureMessage(a)
	}
	return al
}

// maxFailure bounds Alloc.Failure: it goes into log lines and /healthz, and a driver's
// error can quote a whole command line or stack.
const maxFailure = 512

// taskHookFailed is Nomad's event type for a failed task hook (no constant in the api
// module).
const taskHookFailed = "Task hook failed"

// failureMessage returns the most telling task event of the allocation as "<type>:
// <message>": events that failed the task (the driver could not start it, its setup or
// validation failed, a hook failed) over the task's own exit, over a kill or a refusal to
// restart; the latest of equals. It is what `nomad alloc status` shows an operator, so the
// handler's log can name the cause (a missing binary, a permission) instead of "failed".
func failureMessage(a *nomad.Allocation) string {
	var best *nomad.TaskEvent
	bestRank := 0
	for _, ts := range a.TaskStates {
		if ts == nil {
			continue
		}
		for _, e := range ts.Events {
			if e == nil {
				continue
			}
			r := eventRank(e)
			if r > bestRank || (r == bestRank && r > 0 && e.Time > best.Time) {
				best, bestRank = e, r
			}
		}
	}
	if best == nil {
		return ""
	}
	msg := best.DisplayMessage
	for _, m := range []string{best.DriverError, best.SetupError, best.ValidationError, best.DownloadError, best.KillError, best.Message} {
		if msg != "" {
			break
		}
		msg = m
	}
	msg = strings.TrimSpace(msg)
	if msg == "" {
		msg = best.Type
	} else {
		msg = best.Type + ": " + msg
	}
	if len(msg) > maxFailure {
		cut := maxFailure
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut]
	}
	return msg
}

// eventRank orders task events by how well they explain a failure; 0 explains nothing.
func eventRank(e *nomad.TaskEvent) int {
	switch {
	case e.FailsTask, e.DriverError != "", e.SetupError != "", e.ValidationError != "", e.KillError != "":
		return 4
	}
	switch e.Type {
	case nomad.TaskDriverFailure, nomad.TaskSetupFailure, nomad.TaskFailedValidation, taskHookFailed, nomad.TaskArtifactDownloadFailed:
		return 4
	case nomad.TaskTerminated:
		return 3
	case nomad.TaskKilled, nomad.TaskSiblingFailed:
		return 2
	case nomad.TaskNotRestarting:
		return 1
	}
	return 0
}

func terminal(client, desired string) bool {
	switch client {
	case nomad.AllocClientStatusComplete, nomad.AllocClientStatusFailed, nomad.AllocClientStatusLost:
		return true
	}
	return desired == nomad.AllocDesiredStatusStop || desired == nomad.AllocDesiredStatusEvict
}

func isNotFound(err error) bool {
	var ue nomad.UnexpectedResponseError
	return errors.As(err, &ue) && ue.StatusCode() == 404
}

// NodeID returns the id of the node of the local Nomad agent: its client's node id, or
// the only node of the cluster.
func NodeID(ctx context.Context, c *nomad.Client) (string, error) {
	self, err := c.Agent().Self()
	if err == nil {
		if id := self.Stats["client"]["node_id"]; id != "" {
			return id, nil
		}
	}
	nodes, _, lerr := c.Nodes().List((&nomad.QueryOptions{}).WithContext(ctx))
	if lerr != nil {
		return "", fmt.Errorf("find the local nomad node: %w", errors.Join(err, lerr))
	}
	if len(nodes) != 1 {
		return "", fmt.Errorf("find the local nomad node: the agent is no client and the cluster has %d nodes; set FNHOOK_NODE_ID", len(nodes))
	}
	return nodes[0].ID, nil
}

// FindTemplate returns the path of jobs/runner.nomad.hcl: in the folder of the binary or
// above it, else in the working directory or above it (jobs/ is a fixed folder of the
// repository).
func FindTemplate() (string, error) {
	var starts []string
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for {
			p := filepath.Join(dir, "jobs", "runner.nomad.hcl")
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("jobs/runner.nomad.hcl not found above the binary or the working directory; set FNHOOK_RUNNER_JOB_FILE")
}
