package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// serve runs p on a unix socket (as the builder does) until the test ends and returns the
// socket's path.
func serve(t *testing.T, p *Proxy) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "proxy.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return sock
}

// client is an HTTP client whose proxy is the unix socket sock.
func client(sock string, rootCAs *tls.Config) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: "proxy.invalid:1"}),
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
			TLSClientConfig: rootCAs,
		},
	}
}

func hostOf(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func TestAllowedConnectTunnels(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "registry says hi")
	}))
	defer up.Close()
	reg := prometheus.NewRegistry()
	p, err := New(Config{Allow: []string{up.URL}}, reg)
	if err != nil {
		t.Fatal(err)
	}
	c := client(serve(t, p), up.Client().Transport.(*http.Transport).TLSClientConfig)
	resp, err := c.Get(up.URL + "/dayjs")
	if err != nil {
		t.Fatalf("GET through the tunnel: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "registry says hi" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if n := testutil.ToFloat64(p.denied); n != 0 {
		t.Errorf("denied counter = %v after an allowed tunnel", n)
	}
}

func TestDeniedDestinationsGet403(t *testing.T) {
	allowed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer allowed.Close()
	// A loopback service the builder must never let npm reach (think Nomad's API).
	reached := make(chan string, 10)
	secret := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached <- r.URL.Path
	}))
	defer secret.Close()
	reg := prometheus.NewRegistry()
	p, err := New(Config{Allow: []string{allowed.URL}}, reg)
	if err != nil {
		t.Fatal(err)
	}
	sock := serve(t, p)
	_, allowedPort, _ := net.SplitHostPort(hostOf(t, allowed.URL))
	_, secretPort, _ := net.SplitHostPort(hostOf(t, secret.URL))

	tests := []struct {
		name   string
		method string
		target string // request target as written on the request line
	}{
		{"CONNECT to a denied loopback port", "CONNECT", "127.0.0.1:" + secretPort},
		{"plain GET to a denied loopback port", "GET", secret.URL + "/v1/jobs"},
		{"CONNECT to Nomad's port on loopback", "CONNECT", "127.0.0.1:4646"},
		{"plain GET to another name of the allowed host", "GET", "http://localhost:" + allowedPort + "/"},
		{"CONNECT to a public host", "CONNECT", "example.com:443"},
		{"plain GET to the Nomad bridge", "GET", "http://172.26.64.1:4646/v1/jobs"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			host := tt.target
			if u, err := url.Parse(tt.target); err == nil && u.Host != "" {
				host = u.Host
			}
			fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\n\r\n", tt.method, tt.target, host)
			resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: tt.method})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("status %d, want 403", resp.StatusCode)
			}
			if n := testutil.ToFloat64(p.denied); n != float64(i+1) {
				t.Errorf("denied counter = %v, want %d", n, i+1)
			}
		})
	}
	select {
	case path := <-reached:
		t.Fatalf("the denied server got a request for %s", path)
	default:
	}
	// The counter is the one exported on the registry.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "fnhook_builder_egress_denied_total" {
		t.Fatalf("registry holds %v", mfs)
	}
}

func TestAllowedPlainHTTPIsForwarded(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Proxy-Connection") != "" || r.Header.Get("Proxy-Authorization") != "" {
			http.Error(w, "hop-by-hop header forwarded", 500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q,"host":%q}`, r.URL.Path, r.Host)
	}))
	defer up.Close()
	p, err := New(Config{Allow: []string{up.URL}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := client(serve(t, p), nil)
	req, _ := http.NewRequest("GET", up.URL+"/dayjs", nil)
	req.Header.Set("Proxy-Authorization", "Basic c2VjcmV0")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf(`{"path":"/dayjs","host":%q}`, hostOf(t, up.URL))
	if resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("got %d %s, want 200 %s", resp.StatusCode, body, want)
	}
}

func TestOriginFormRequestIsRefused(t *testing.T) {
	p, err := New(Config{Allow: []string{"registry.npmjs.org"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("unix", serve(t, p))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:4646\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
}

func TestTunnelsAreBoundedAndClosedWithServe(t *testing.T) {
	// An upstream that accepts and holds connections.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	p, err := New(Config{Allow: []string{ln.Addr().String()}, MaxConns: 2, Idle: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "proxy.sock")
	pl, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, pl, slog.New(slog.NewTextHandler(io.Discard, nil))) }()

	open := func() net.Conn {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %[1]s\r\n\r\n", ln.Addr())
		return c
	}
	var tunnels []net.Conn
	for range 2 {
		c := open()
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "CONNECT"})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %v %v", resp, err)
		}
		tunnels = append(tunnels, c)
	}
	// A third waits: no answer while two tunnels are open.
	third := open()
	_ = third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := third.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("third connection got an answer (%v) while the limit was reached", err)
	}
	tunnels[0].Close()
	_ = third.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(third), &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("third CONNECT after a slot freed: %v %v", resp, err)
	}
	// Ending Serve closes the tunnels still open.
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	_ = tunnels[1].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := tunnels[1].Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("a tunnel stayed open after Serve returned: %v", err)
	}
}

func TestIdleTunnelIsClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	p, err := New(Config{Allow: []string{ln.Addr().String()}, Idle: 300 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", serve(t, p))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %[1]s\r\n\r\n", ln.Addr())
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = br.ReadByte()
	if err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("idle tunnel not closed: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("idle tunnel closed after %s, idle limit 300ms", took)
	}
}

func TestHostPort(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "https://registry.npmjs.org/", want: "registry.npmjs.org:443"},
		{in: "http://127.0.0.1:4873/", want: "127.0.0.1:4873"},
		{in: "http://Registry.Example.com", want: "registry.example.com:80"},
		{in: "registry.yarnpkg.com", want: "registry.yarnpkg.com:443"},
		{in: "cdn.example.com:8443", want: "cdn.example.com:8443"},
		{in: "[::1]:4873", want: "[::1]:4873"},
		{in: "ftp://x/", bad: true},
		{in: "", bad: true},
	}
	for _, tt := range tests {
		got, err := HostPort(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("HostPort(%q) = %q, %v; want %q (error %v)", tt.in, got, err, tt.want, tt.bad)
		}
	}
}
