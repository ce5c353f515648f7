package build_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/blob"
	"github.com/fnhook/fnhook/libs/queue"
	"github.com/fnhook/fnhook/libs/store"
	"github.com/fnhook/fnhook/libs/testinfra"
	"github.com/fnhook/fnhook/services/builder/build"
	"github.com/fnhook/fnhook/services/builder/npm"
	"github.com/fnhook/fnhook/services/builder/sandbox"
)

// TestMain lets this test binary act as the sandbox helper: builds run sandboxed as root.
func TestMain(m *testing.M) {
	sandbox.Main()
	os.Exit(m.Run())
}

// harness is one test's real servers under unique names, plus a queue that collects the
// module events the builders publish.
type harness struct {
	env    *testinfra.Env
	st     *store.Store
	bl     *blob.Store
	puts   *countingBlobs
	names  queue.Names
	q      *queue.Conn
	ch     *amqp.Channel
	events <-chan amqp.Delivery
	reg    *prometheus.Registry // of the last builder started
	stop   func() error         // stops the last builder started and returns Run's error
}

// countingBlobs counts the uploads per key, so a test sees how often an object was written.
type countingBlobs struct {
	*blob.Store
	mu   sync.Mutex
	puts map[string]int
}

func (c *countingBlobs) Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error {
	c.mu.Lock()
	c.puts[key]++
	c.mu.Unlock()
	return c.Store.Put(ctx, key, r, size)
}

func (c *countingBlobs) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.puts[key]
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	env := testinfra.Start(t)
	h := &harness{env: env, st: env.Store(t), bl: env.Blob(t), names: testinfra.QueueNames()}
	h.puts = &countingBlobs{Store: h.bl, puts: map[string]int{}}
	h.q = env.Queue(t, h.names)
	conn, err := amqp.Dial(env.AMQPURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if h.ch, err = conn.Channel(); err != nil {
		t.Fatal(err)
	}
	// Bound before any build starts, so no event is missed.
	q, err := h.ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{fnhook.EventModuleReady, fnhook.EventModuleFailed} {
		if err := h.ch.QueueBind(q.Name, k, h.names.Exchange, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if h.events, err = h.ch.Consume(q.Name, "", true, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	return h
}

// start runs a builder on the harness's queue until the test ends.
func (h *harness) start(t *testing.T, owner string, tune func(*build.Config, *npm.Config)) *build.Builder {
	t.Helper()
	ncfg := npm.Config{CAFile: os.Getenv("NODE_EXTRA_CA_CERTS"), Timeout: 90 * time.Second, FetchRetries: 1}
	cfg := build.Config{
		Owner: owner, Queue: h.names.BuildQueue, Concurrency: 2, ClaimTTL: 20 * time.Second,
		Retries: 2, Backoff: 50 * time.Millisecond, Poll: 200 * time.Millisecond, Grace: 5 * time.Second,
	}
	if tune != nil {
		tune(&cfg, &ncfg)
	}
	inst, err := npm.New(ncfg)
	if err != nil {
		t.Fatal(err)
	}
	log := testinfra.Logger(t).With("owner", owner)
	h.reg = prometheus.NewRegistry()
	b, err := build.New(cfg, h.st, h.puts, h.q, inst, h.reg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, h.q) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	h.stop = stop
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return b
}

// metric returns the value of a counter or gauge (summed over labels matching label=value
// when label is not empty) from the last started builder's registry.
func (h *harness) metric(t *testing.T, name, label, value string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				match = match || (lp.GetName() == label && lp.GetValue() == value)
			}
			if !match {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

func (h *harness) publish(t *testing.T, name, version string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.q.PublishBuild(ctx, fnhook.BuildRequest{Name: name, Version: version}); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) publishRaw(t *testing.T, body string) {
	t.Helper()
	err := h.ch.PublishWithContext(context.Background(), "", h.names.BuildQueue, false, false,
		amqp.Publishing{ContentType: "application/json", Body: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
}

// waitModule polls the record until it has status.
func (h *harness) waitModule(t *testing.T, name, version, status string, within time.Duration) fnhook.Module {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		m, found, err := h.st.GetModule(context.Background(), name, version)
		if err != nil {
			t.Fatal(err)
		}
		if found && m.Status == status && (status != fnhook.ModuleBuilding || m.Owner == "") {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("module %s@%s: record %+v (found %v), want status %s within %s", name, version, m, found, status, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitEvent returns the next event published for name@version.
func (h *harness) waitEvent(t *testing.T, name, version string, within time.Duration) (string, fnhook.ModuleEvent) {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case d := <-h.events:
			var ev fnhook.ModuleEvent
			if err := json.Unmarshal(d.Body, &ev); err != nil {
				t.Fatalf("event %q: %v", d.Body, err)
			}
			if ev.Name == name && ev.Version == version {
				return d.RoutingKey, ev
			}
		case <-timeout:
			t.Fatalf("no event for %s@%s within %s", name, version, within)
		}
	}
}

// waitHandled waits until the builders handled n messages between them.
func waitHandled(t *testing.T, n int64, within time.Duration, bs ...*build.Builder) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var got int64
		for _, b := range bs {
			got += b.Stats().Handled
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("builders handled %d messages, want %d within %s", got, n, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dlq returns the messages in the dead-letter queue, waiting until there are want.
func (h *harness) dlq(t *testing.T, want int, within time.Duration) []string {
	t.Helper()
	var got []string
	deadline := time.Now().Add(within)
	for len(got) < want {
		d, ok, err := h.ch.Get(h.names.BuildDLQ, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			got = append(got, string(d.Body))
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead-letter queue has %d messages %q, want %d within %s", len(got), got, want, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return got
}

// unpack downloads the module's tarball, checks it against the record, unpacks it the way
// the module cache does (into <dir>/<name>@<version>/) and returns that folder.
func (h *harness) unpack(t *testing.T, m fnhook.Module) string {
	t.Helper()
	rc, size, err := h.bl.Get(context.Background(), fnhook.ModuleObjectKey(m.Name, m.Version))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != m.SHA256 || int64(len(data)) != m.Size || size != m.Size {
		t.Fatalf("object is %d bytes with sha256 %s; record says %d bytes, %s", len(data), got, m.Size, m.SHA256)
	}
	dir := filepath.Join(t.TempDir(), fnhook.ModuleKey(m.Name, m.Version))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tgz := filepath.Join(t.TempDir(), "module.tgz")
	if err := os.WriteFile(tgz, data, 0o644); err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command("tar", "-tzf", tgz).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range strings.Fields(string(list)) {
		if !strings.HasPrefix(name, "node_modules/") {
			t.Fatalf("tarball entry %q is not under node_modules/", name)
		}
	}
	if out, err := exec.Command("tar", "-xzf", tgz, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("unpack: %v: %s", err, out)
	}
	return dir
}

func node(t *testing.T, script string) string {
	t.Helper()
	out, err := exec.Command("node", "-e", script).CombinedOutput()
	if err != nil {
		t.Fatalf("node -e %q: %v: %s", script, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestBuildStoresRunnableModules(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.start(t, "builder-a", nil)
	h.publish(t, "dayjs", "1.11.13")
	h.publish(t, "lodash", "4.17.21")

	tests := []struct {
		name, version, script, want string
	}{
		{"dayjs", "1.11.13", `console.log(require(%q)("2024-02-29T12:00:00Z").add(1, "year").format("YYYY-MM-DD"))`, "2025-02-28"},
		{"lodash", "4.17.21", `const _ = require(%q); console.log(JSON.stringify(_.chunk([1,2,3,4,5], 2)), _.VERSION)`, "[[1,2],[3,4],[5]] 4.17.21"},
	}
	events := map[string]string{}
	for range tests {
		key, ev := h.waitEventAny(t, 120*time.Second)
		if ev.Error != "" {
			t.Fatalf("%s for %s@%s: %s", key, ev.Name, ev.Version, ev.Error)
		}
		events[fnhook.ModuleKey(ev.Name, ev.Version)] = key
	}
	for _, tt := range tests {
		if events[fnhook.ModuleKey(tt.name, tt.version)] != fnhook.EventModuleReady {
			t.Errorf("events = %v, want module.ready for %s@%s", events, tt.name, tt.version)
		}
		m := h.waitModule(t, tt.name, tt.version, fnhook.ModuleReady, 10*time.Second)
		if m.Size <= 0 || m.BuiltAt.IsZero() || m.Attempts != 1 || m.Error != "" {
			t.Errorf("record %+v: want a size, a build time, one attempt and no error", m)
		}
		dir := h.unpack(t, m)
		script := strings.Replace(tt.script, "%q", `"`+filepath.Join(dir, "node_modules", tt.name)+`"`, 1)
		if got := node(t, script); got != tt.want {
			t.Errorf("%s printed %q, want %q", tt.name, got, tt.want)
		}
	}
	if s := b.Stats(); s.Started != 2 || s.Succeeded != 2 || s.Uploads != 2 {
		t.Errorf("stats %+v: want 2 builds started, succeeded and uploaded", s)
	}
	dayjs := h.waitModule(t, "dayjs", "1.11.13", fnhook.ModuleReady, time.Second)
	lodash := h.waitModule(t, "lodash", "4.17.21", fnhook.ModuleReady, time.Second)
	for _, c := range []struct {
		name, label, value string
		want               float64
	}{
		{"fnhook_builder_builds_started_total", "", "", 2},
		{"fnhook_builder_builds_succeeded_total", "", "", 2},
		{"fnhook_builder_builds_failed_total", "", "", 0},
		{"fnhook_builder_build_duration_seconds", "outcome", "ready", 2},
		{"fnhook_builder_stored_bytes_total", "", "", float64(dayjs.Size + lodash.Size)},
		{"fnhook_builder_builds_running", "", "", 0},
	} {
		if got := h.metric(t, c.name, c.label, c.value); got != c.want {
			t.Errorf("metric %s{%s=%q} = %v, want %v", c.name, c.label, c.value, got, c.want)
		}
	}
}

// waitEventAny returns the next module event.
func (h *harness) waitEventAny(t *testing.T, within time.Duration) (string, fnhook.ModuleEvent) {
	t.Helper()
	select {
	case d := <-h.events:
		var ev fnhook.ModuleEvent
		if err := json.Unmarshal(d.Body, &ev); err != nil {
			t.Fatalf("event %q: %v", d.Body, err)
		}
		return d.RoutingKey, ev
	case <-time.After(within):
		t.Fatalf("no module event within %s", within)
	}
	panic("unreachable")
}

func TestSameMessageThriceBuildsOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.start(t, "builder-a", nil)
	for range 3 {
		h.publish(t, "dayjs", "1.11.13")
	}
	waitHandled(t, 3, 120*time.Second, b)
	m := h.waitModule(t, "dayjs", "1.11.13", fnhook.ModuleReady, time.Second)
	if m.Attempts != 1 {
		t.Errorf("record attempts = %d, want 1", m.Attempts)
	}
	if n := h.puts.count(fnhook.ModuleObjectKey("dayjs", "1.11.13")); n != 1 {
		t.Errorf("object written %d times, want once", n)
	}
	if s := b.Stats(); s.Started != 1 || s.Succeeded != 1 {
		t.Errorf("stats %+v: want one build", s)
	}
	// A later duplicate is acked without building.
	h.publish(t, "dayjs", "1.11.13")
	waitHandled(t, 4, 30*time.Second, b)
	if s := b.Stats(); s.Started != 1 {
		t.Errorf("a duplicate after the build started another one: %+v", s)
	}
}

func TestTwoBuildersBuildOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := h.start(t, "builder-a", nil)
	b := h.start(t, "builder-b", nil)
	for range 4 {
		h.publish(t, "ms", "2.1.3")
	}
	waitHandled(t, 4, 120*time.Second, a, b)
	m := h.waitModule(t, "ms", "2.1.3", fnhook.ModuleReady, time.Second)
	if m.Attempts != 1 {
		t.Errorf("record attempts = %d, want 1", m.Attempts)
	}
	sa, sb := a.Stats(), b.Stats()
	if sa.Started+sb.Started != 1 || sa.Handled == 0 || sb.Handled == 0 {
		t.Errorf("stats a %+v, b %+v: want one build between them, and both handling messages", sa, sb)
	}
	if n := h.puts.count(fnhook.ModuleObjectKey("ms", "2.1.3")); n != 1 {
		t.Errorf("object written %d times, want once", n)
	}
	dir := h.unpack(t, m)
	if got := node(t, `console.log(require("`+filepath.Join(dir, "node_modules", "ms")+`")("2h"))`); got != "7200000" {
		t.Errorf("ms printed %q", got)
	}
}

func TestMissingVersionFailsWithNPMsMessage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.start(t, "builder-a", nil)
	h.publish(t, "dayjs", "0.0.999")
	key, ev := h.waitEvent(t, "dayjs", "0.0.999", 120*time.Second)
	if key != fnhook.EventModuleFailed {
		t.Fatalf("event %s, want %s", key, fnhook.EventModuleFailed)
	}
	m := h.waitModule(t, "dayjs", "0.0.999", fnhook.ModuleFailed, 5*time.Second)
	if !strings.Contains(m.Error, "ETARGET") || !strings.Contains(m.Error, "No matching version") {
		t.Errorf("record error %q: want npm's ETARGET message", m.Error)
	}
	if ev.Error != m.Error {
		t.Errorf("event error %q differs from the record's %q", ev.Error, m.Error)
	}
	if strings.Contains(m.Error, "fnhook-build-") || len(m.Error) > npm.MessageLimit {
		t.Errorf("record error leaks a temporary path or is too long: %q", m.Error)
	}
	if m.Owner != "" || m.SHA256 != "" {
		t.Errorf("failed record %+v keeps a claim or a checksum", m)
	}
	waitHandled(t, 1, 5*time.Second, b)
	if s := b.Stats(); s.Failed != 1 || s.Started != 1 || s.DeadLettered != 0 {
		t.Errorf("stats %+v: want one permanent failure", s)
	}
	// A redelivered request for a failed module is acked without building again.
	h.publish(t, "dayjs", "0.0.999")
	waitHandled(t, 2, 30*time.Second, b)
	if s := b.Stats(); s.Started != 1 {
		t.Errorf("the failed module was built again: %+v", s)
	}
	if _, err := h.ch.QueueDeclarePassive(h.names.BuildDLQ, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if d, ok, _ := h.ch.Get(h.names.BuildDLQ, true); ok {
		t.Errorf("dead-letter queue holds %q; permanent failures are acked", d.Body)
	}
}

func TestInvalidMessagesAreDeadLettered(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.start(t, "builder-a", nil)
	bodies := []string{`not json`, `{"name":"dayjs","version":"^1.11.0"}`, `{"name":"../../etc","version":"1.0.0"}`}
	for _, body := range bodies {
		h.publishRaw(t, body)
	}
	got := h.dlq(t, len(bodies), 30*time.Second)
	for _, want := range bodies {
		found := false
		for _, g := range got {
			found = found || g == want
		}
		if !found {
			t.Errorf("dead-letter queue %q lacks %q", got, want)
		}
	}
	if s := b.Stats(); s.Rejected != 3 || s.Started != 0 {
		t.Errorf("stats %+v: want 3 rejected and no build", s)
	}
}

func TestUnreachableRegistryRetriesThenDeadLetters(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// A loopback port nobody listens on: npm fails with ECONNREFUSED at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	registry := "http://" + ln.Addr().String() + "/"
	ln.Close()
	b := h.start(t, "builder-a", func(c *build.Config, n *npm.Config) {
		c.Retries = 2
		n.Registry = registry
		n.FetchRetries = 0
	})
	h.publish(t, "dayjs", "1.11.13")
	got := h.dlq(t, 1, 60*time.Second)
	if !strings.Contains(got[0], `"dayjs"`) {
		t.Errorf("dead letter %q is not the build request", got[0])
	}
	m, found, err := h.st.GetModule(context.Background(), "dayjs", "1.11.13")
	if err != nil || !found {
		t.Fatalf("record: %v (found %v)", err, found)
	}
	if m.Status != fnhook.ModuleBuilding || m.ClaimUntil != 0 || m.Attempts != 0 {
		t.Errorf("record %+v: want building with the claim released and attempts reset", m)
	}
	if s := b.Stats(); s.Started != 3 || s.Transient != 3 || s.DeadLettered != 1 || s.Failed != 0 {
		t.Errorf("stats %+v: want 3 attempts, 3 transient failures, 1 dead letter", s)
	}
	if n := h.puts.count(fnhook.ModuleObjectKey("dayjs", "1.11.13")); n != 0 {
		t.Errorf("object written %d times, want never", n)
	}
	select {
	case d := <-h.events:
		t.Errorf("event %s %s published for a dead-lettered build", d.RoutingKey, d.Body)
	default:
	}
}

// TestHandleWaitsForAnotherBuilder checks that a module claimed by a live builder elsewhere
// is not built again, and that the message is acked once that builder recorded it.
func TestHandleWaitsForAnotherBuilder(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	if _, ok, err := h.st.ClaimModule(ctx, "ms", "2.1.3", "someone-else", time.Minute); err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	inst, err := npm.New(npm.Config{CAFile: os.Getenv("NODE_EXTRA_CA_CERTS")})
	if err != nil {
		t.Fatal(err)
	}
	b, err := build.New(build.Config{Owner: "builder-a", Poll: 50 * time.Millisecond}, h.st, h.puts, h.q, inst,
		prometheus.NewRegistry(), testinfra.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	var done atomic.Bool
	errc := make(chan error, 1)
	go func() {
		// Redelivered: the outcome is announced again, as the first delivery may have died
		// between recording and announcing it.
		errc <- b.Handle(ctx, amqp.Delivery{Body: []byte(`{"name":"ms","version":"2.1.3"}`), Redelivered: true})
		done.Store(true)
	}()
	time.Sleep(500 * time.Millisecond)
	if done.Load() {
		t.Fatalf("Handle returned while another builder held the module: %v", <-errc)
	}
	err = h.st.FinishModuleClaim(ctx, fnhook.Module{Name: "ms", Version: "2.1.3", Status: fnhook.ModuleReady,
		SHA256: "00", Size: 1, Attempts: 1}, "someone-else")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Handle: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Handle did not return after the other builder finished")
	}
	if s := b.Stats(); s.Started != 0 {
		t.Errorf("stats %+v: built a module another builder had", s)
	}
	if key, ev := h.waitEvent(t, "ms", "2.1.3", 10*time.Second); key != fnhook.EventModuleReady || ev.Error != "" {
		t.Errorf("event %s %+v, want module.ready", key, ev)
	}
}

// waitClaimed polls the record until a builder holds a claim on it.
func (h *harness) waitClaimed(t *testing.T, name, version string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, found, err := h.st.GetModule(context.Background(), name, version)
		if err != nil {
			t.Fatal(err)
		}
		if found && m.Status == fnhook.ModuleBuilding && m.Owner != "" && m.ClaimUntil > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("module %s@%s never claimed: %+v", name, version, m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) queued(t *testing.T, name string) int {
	t.Helper()
	info, err := h.ch.QueueDeclarePassive(name, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return info.Messages
}

func TestShutdownLetsRunningBuildsFinish(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.start(t, "builder-a", func(c *build.Config, _ *npm.Config) { c.Grace = time.Minute })
	h.publish(t, "dayjs", "1.11.13")
	h.waitClaimed(t, "dayjs", "1.11.13")
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Run returned only after the build ended, which was recorded and acked.
	m := h.waitModule(t, "dayjs", "1.11.13", fnhook.ModuleReady, time.Second)
	if m.Attempts != 1 {
		t.Errorf("record %+v: want one attempt", m)
	}
	if s := b.Stats(); s.Succeeded != 1 {
		t.Errorf("stats %+v: want the running build finished", s)
	}
	if n := h.queued(t, h.names.BuildQueue); n != 0 {
		t.Errorf("build queue holds %d messages after a finished build", n)
	}
}

func TestShutdownAfterGraceRequeuesTheBuild(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.start(t, "builder-a", func(c *build.Config, _ *npm.Config) { c.Grace = 50 * time.Millisecond })
	h.publish(t, "lodash", "4.17.21")
	h.waitClaimed(t, "lodash", "4.17.21")
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	m, _, err := h.st.GetModule(context.Background(), "lodash", "4.17.21")
	if err != nil {
		t.Fatal(err)
	}
	// The claim was handed back, so another builder need not wait for it to expire.
	if m.Status != fnhook.ModuleBuilding || m.ClaimUntil != 0 {
		t.Errorf("record %+v: want building with the claim released", m)
	}
	if s := b.Stats(); s.Succeeded != 0 || s.DeadLettered != 0 || s.Uploads != 0 {
		t.Errorf("stats %+v: want the build interrupted", s)
	}
	// The message went back to the queue, not to the dead-letter queue.
	deadline := time.Now().Add(5 * time.Second)
	for h.queued(t, h.names.BuildQueue) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("build queue holds %d messages, want the interrupted one", h.queued(t, h.names.BuildQueue))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := h.queued(t, h.names.BuildDLQ); n != 0 {
		t.Errorf("dead-letter queue holds %d messages", n)
	}
	// A new builder picks it up and finishes it.
	b2 := h.start(t, "builder-b", nil)
	m = h.waitModule(t, "lodash", "4.17.21", fnhook.ModuleReady, 120*time.Second)
	if m.Attempts != 2 {
		t.Errorf("record %+v: want two attempts", m)
	}
	waitHandled(t, 1, 30*time.Second, b2)
	if s := b2.Stats(); s.Succeeded != 1 || s.Started != 1 {
		t.Errorf("second builder stats %+v", s)
	}
}
