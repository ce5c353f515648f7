package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/testinfra"
	"github.com/fnhook/fnhook/services/builder/sandbox"
)

// proc is a builder binary running as a subprocess; its log lines are kept.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs []map[string]any
	done chan struct{}
}

func (p *proc) find(match func(map[string]any) bool) map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.logs {
		if match(l) {
			return l
		}
	}
	return nil
}

func startBuilder(t *testing.T, bin string, env []string) *proc {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = env
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			t.Logf("builder[%d]: %s", cmd.Process.Pid, sc.Text())
			var l map[string]any
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				p.mu.Lock()
				p.logs = append(p.logs, l)
				p.mu.Unlock()
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		_ = cmd.Wait()
	})
	return p
}

// TestKilledBuilderIsTakenOver kills a real builder process in the middle of a build and
// checks that a second one takes the redelivered message over once the claim expired.
func TestKilledBuilderIsTakenOver(t *testing.T) {
	env := testinfra.Start(t)
	st := env.Store(t)
	bl := env.Blob(t)
	names := testinfra.QueueNames()
	q := env.Queue(t, names)

	bin := filepath.Join(t.TempDir(), "builder")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// The build folders go to a folder of this test, so a killed builder's leftovers are
	// removed with it.
	work, err := os.MkdirTemp("", "builder-work-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The killed builder's workspace is still mounted.
		entries, _ := os.ReadDir(work)
		for _, e := range entries {
			_ = sandbox.UnmountWorkspace(filepath.Join(work, e.Name()))
		}
		os.RemoveAll(work)
	})
	vars := []string{
		"FNHOOK_BUILDER_WORKDIR=" + work,
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"FNHOOK_LISTEN=127.0.0.1:0",
		"FNHOOK_LOG_LEVEL=debug",
		"FNHOOK_CONSUL_ADDR=" + env.ConsulAddr,
		"FNHOOK_CONSUL_TOKEN=" + env.ConsulToken,
		"FNHOOK_AMQP_URL=" + env.AMQPURL,
		"FNHOOK_DYNAMODB_ENDPOINT=" + env.DynamoDB,
		"FNHOOK_DYNAMODB_TABLE=" + st.Table(),
		"FNHOOK_S3_ENDPOINT=" + env.S3Endpoint,
		"FNHOOK_S3_BUCKET=" + bl.Bucket(),
		"FNHOOK_AWS_REGION=" + env.Region,
		"FNHOOK_AWS_ACCESS_KEY_ID=" + env.AccessKey,
		"FNHOOK_AWS_SECRET_ACCESS_KEY=" + env.SecretKey,
		"FNHOOK_EVENTS_EXCHANGE=" + names.Exchange,
		"FNHOOK_BUILD_QUEUE=" + names.BuildQueue,
		"FNHOOK_BUILD_DLQ=" + names.BuildDLQ,
		"FNHOOK_NPM_CAFILE=" + os.Getenv("NODE_EXTRA_CA_CERTS"),
		"FNHOOK_BUILDER_CLAIM_TTL=3s",
		"FNHOOK_BUILDER_GRACE=5s",
	}
	consul := env.Consul(t)
	deregister := func(p *proc) {
		if l := p.find(func(l map[string]any) bool { return l["msg"] == "serving" }); l != nil {
			_ = consul.Deregister(l["consul_id"].(string))
		}
	}

	first := startBuilder(t, bin, vars)
	ctx := context.Background()
	if err := q.PublishBuild(ctx, fnhook.BuildRequest{Name: "lodash", Version: "4.17.21"}); err != nil {
		t.Fatal(err)
	}
	// Kill the first builder while it holds the claim, i.e. in the middle of npm install.
	deadline := time.Now().Add(60 * time.Second)
	var claimed fnhook.Module
	for {
		m, found, err := st.GetModule(ctx, "lodash", "4.17.21")
		if err != nil {
			t.Fatal(err)
		}
		if found && m.Status == fnhook.ModuleBuilding && m.Owner != "" {
			claimed = m
			break
		}
		if found && m.Status != fnhook.ModuleBuilding {
			t.Fatalf("the build ended (%s) before it could be killed", m.Status)
		}
		if time.Now().After(deadline) {
			t.Fatal("the first builder never claimed the module")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	deregister(first)
	if m, _, _ := st.GetModule(ctx, "lodash", "4.17.21"); m.Status != fnhook.ModuleBuilding {
		t.Fatalf("after the kill the record is %+v, want still building", m)
	}

	second := startBuilder(t, bin, vars)
	defer deregister(second)
	deadline = time.Now().Add(120 * time.Second)
	var m fnhook.Module
	for {
		var err error
		if m, _, err = st.GetModule(ctx, "lodash", "4.17.21"); err != nil {
			t.Fatal(err)
		}
		if m.Status != fnhook.ModuleBuilding {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("module still %+v after the second builder ran for 120s", m)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if m.Status != fnhook.ModuleReady || m.Attempts != 2 || m.Owner != "" {
		t.Fatalf("record %+v: want ready after a second attempt", m)
	}
	if m.SHA256 == "" || m.Size == 0 {
		t.Fatalf("record %+v has no checksum or size", m)
	}
	rc, size, err := bl.Get(ctx, fnhook.ModuleObjectKey("lodash", "4.17.21"))
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if size != m.Size {
		t.Errorf("object is %d bytes, record says %d", size, m.Size)
	}
	// The second builder got the very message the first one held: redelivered, not lost.
	started := second.find(func(l map[string]any) bool {
		return l["msg"] == "build started" && l["module"] == "lodash@4.17.21"
	})
	if started == nil || started["redelivered"] != true {
		t.Errorf("second builder's build log %v: want a redelivered message", started)
	}
	if owner := second.find(func(l map[string]any) bool { return l["msg"] == "builder starting" }); owner == nil || owner["owner"] == claimed.Owner {
		t.Errorf("second builder has the first one's owner id %q", claimed.Owner)
	}

	// Nothing is left in the queues, and the second builder stops cleanly on SIGTERM.
	conn, err := amqp.Dial(env.AMQPURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{names.BuildQueue, names.BuildDLQ} {
		info, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if info.Messages != 0 {
			t.Errorf("queue %s holds %d messages", name, info.Messages)
		}
	}
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.done:
	case <-time.After(20 * time.Second):
		t.Fatal("second builder did not stop within 20s of SIGTERM")
	}
	if err := second.cmd.Wait(); err != nil {
		t.Errorf("second builder exited with %v", err)
	}
	if l := second.find(func(l map[string]any) bool { return strings.HasPrefix(l["msg"].(string), "stopping") }); l == nil {
		t.Error("second builder did not log its shutdown")
	}
}
