package scenario

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/fnhook/fnhook/bench/platform"
)

func floorJS(t *testing.T) []byte {
	t.Helper()
	src, err := os.ReadFile("../floor.js")
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func newBench(t *testing.T, cfg Config) *Bench {
	t.Helper()
	cfg.Node = "node"
	cfg.FloorJS = floorJS(t)
	b, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestFloorJSContract(t *testing.T) {
	src := string(floorJS(t))
	// Nomad would interpolate these in the bridge job's arguments.
	if strings.Contains(src, "${") {
		t.Fatal("floor.js holds a ${ sequence")
	}
	// Its default function is the benchmark's: the floors and fnhook run the same body.
	m := regexp.MustCompile(`const DEFAULT_FUNCTION = '([^']*)';`).FindStringSubmatch(src)
	if m == nil || m[1] != PlainCode {
		t.Fatalf("floor.js's DEFAULT_FUNCTION %q is not PlainCode %q", m, PlainCode)
	}
	if strings.Contains(PlainCode, "${") || strings.Contains(DepsCode, "${") {
		t.Fatal("the functions hold a ${ sequence")
	}
}

func TestFloorServesTheFunction(t *testing.T) {
	t.Parallel()
	b := newBench(t, Config{})
	cmd, port, err := b.startFloor(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	tests := []struct {
		path, want string
	}{
		{"/", `{"ok":true,"path":"/"}`},
		{"/a/b?x=1", `{"ok":true,"path":"/a/b"}`},
	}
	for _, tt := range tests {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != tt.want || resp.Header.Get("content-type") != "application/json" {
			t.Errorf("GET %s = %d %q (%s), want 200 %q", tt.path, resp.StatusCode, body, resp.Header.Get("content-type"), tt.want)
		}
	}
}

func TestNaive(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		n    int
	}{{"one", 1}, {"three", 3}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBench(t, Config{NaiveN: tt.n})
			s := b.naive(context.Background())
			if s.Error != "" || s.Latency.N != tt.n || s.Latency.P50 <= 1 {
				t.Fatalf("naive = %+v; want %d samples of a node start (> 1 ms)", s, tt.n)
			}
		})
	}
}

func TestNaiveReportsAFailingNode(t *testing.T) {
	b := newBench(t, Config{NaiveN: 2})
	b.cfg.Node = "/nonexistent/node"
	if s := b.naive(context.Background()); s.Error == "" {
		t.Fatalf("want an error, got %+v", s)
	}
}

func TestRequireTime(t *testing.T) {
	dir := t.TempDir()
	mod := dir + "/tiny@1.0.0/node_modules/tiny"
	if err := os.MkdirAll(mod, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mod+"/index.js", []byte("module.exports = 1;"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		module string
		want   int
	}{{"cached module", "tiny@1.0.0", 3}, {"not in the cache", "tiny@2.0.0", 0}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBench(t, Config{ModulesDir: dir, RequireN: 3})
			if s := b.requireTime(context.Background(), tt.module); s.N != tt.want || (tt.want > 0 && s.P50 <= 0) {
				t.Fatalf("requireTime = %+v, want %d samples", s, tt.want)
			}
		})
	}
}

func TestJoinErr(t *testing.T) {
	tests := []struct{ prev, msg, want string }{{"", "a", "a"}, {"a", "b", "a; b"}}
	for _, tt := range tests {
		if got := joinErr(tt.prev, tt.msg); got != tt.want {
			t.Errorf("joinErr(%q, %q) = %q", tt.prev, tt.msg, got)
		}
	}
}

func TestRetryUnavailable(t *testing.T) {
	busy := &platform.APIError{Status: http.StatusServiceUnavailable, Code: "unavailable"}
	refused := fmt.Errorf("PUT /v1/tenants/x: %w", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
	tests := []struct {
		name      string
		errs      []error // answers in order; nil ends
		wantCalls int
		wantErr   bool
	}{
		{"first try", []error{nil}, 1, false},
		{"busy then fine", []error{busy, busy, nil}, 3, false},
		{"busy too long", []error{busy, busy, busy, busy, busy, busy}, 5, true},
		{"refused then fine", []error{refused, nil}, 2, false},
		{"other errors are not retried", []error{&platform.APIError{Status: 422}}, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			calls := 0
			err := retryUnavailable(context.Background(), func() error {
				calls++
				return tt.errs[calls-1]
			})
			if calls != tt.wantCalls || (err != nil) != tt.wantErr {
				t.Fatalf("calls %d err %v; want %d calls, error %v", calls, err, tt.wantCalls, tt.wantErr)
			}
		})
	}
}
