// Package egress is the forward proxy every sandboxed npm install goes out through. It
// tunnels CONNECT requests and forwards absolute-URI HTTP requests only to the host:port
// pairs on its allowlist (the npm registry and the tarball hosts the builder is configured
// with); everything else gets 403, is counted and is logged with its host.
//
// The builder serves it on a unix socket in a folder only root can enter, one socket per
// build, so nothing else on the machine can use it and each refusal names its module.
package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config says what a Proxy lets through and how much of it.
type Config struct {
	// Allow lists the reachable destinations as host:port (see HostPort). Hosts compare
	// without case; nothing else is reachable, whatever it resolves to.
	Allow []string
	// MaxConns bounds the client connections one Serve call holds at once, tunnels
	// included; more wait until one closes. Default 64.
	MaxConns int
	// Idle closes a tunnel after this long without traffic in either direction, and a
	// kept-alive client connection after this long without a request. Default 60s.
	Idle time.Duration
	// DialTimeout bounds connecting to an allowed destination. Default 15s.
	DialTimeout time.Duration
}

// Proxy is an allowlisting HTTP forward proxy. It is safe for concurrent use; each Serve
// call is one client (one build).
type Proxy struct {
	allow     map[string]bool
	maxConns  int
	idle      time.Duration
	dialer    net.Dialer
	denied    prometheus.Counter
	forwarder *httputil.ReverseProxy
}

// New checks cfg and returns a Proxy. Its metric fnhook_builder_egress_denied_total is
// registered on reg (nil: not exported); a counter already registered there is reused.
func New(cfg Config, reg prometheus.Registerer) (*Proxy, error) {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 64
	}
	if cfg.Idle <= 0 {
		cfg.Idle = 60 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 15 * time.Second
	}
	p := &Proxy{allow: map[string]bool{}, maxConns: cfg.MaxConns, idle: cfg.Idle}
	for _, a := range cfg.Allow {
		hp, err := HostPort(a)
		if err != nil {
			return nil, err
		}
		p.allow[hp] = true
	}
	p.dialer = net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	denied := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fnhook_builder_egress_denied_total",
		Help: "Connections and requests of npm installs refused by the egress proxy (destination not allowed).",
	})
	p.denied = denied
	if reg != nil {
		if err := reg.Register(denied); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("egress metrics: %w", err)
			}
			p.denied = are.ExistingCollector.(prometheus.Counter)
		}
	}
	transport := &http.Transport{
		Proxy: nil, // never the builder's own proxy settings
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			// ServeHTTP checked already; this holds whatever path a request takes.
			if !p.allowed(addr) {
				return nil, fmt.Errorf("egress to %s is not allowed", addr)
			}
			return p.dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       cfg.Idle,
		ResponseHeaderTimeout: 2 * time.Minute,
		ForceAttemptHTTP2:     false,
	}
	p.forwarder = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			// A forward proxy sends the request where its absolute URI says.
			u := *r.In.URL
			r.Out.URL = &u
			r.Out.Host = ""
		},
		Transport: transport,
		ErrorLog:  log.New(io.Discard, "", 0),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "fnhook builder: upstream "+r.URL.Host+" failed", http.StatusBadGateway)
		},
	}
	return p, nil
}

// HostPort normalises a destination for an allowlist: an http(s) URL (its host, with the
// scheme's default port), or host[:port] (default port 443). Hosts are lower-cased.
func HostPort(s string) (string, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return "", fmt.Errorf("egress destination %q is not an http(s) URL", s)
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		return net.JoinHostPort(strings.ToLower(u.Hostname()), port), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = s, "443"
	}
	if host == "" || strings.ContainsAny(host, "/ ") || port == "" {
		return "", fmt.Errorf("egress destination %q is not host[:port]", s)
	}
	return net.JoinHostPort(strings.ToLower(strings.Trim(host, "[]")), port), nil
}

func (p *Proxy) allowed(hostport string) bool {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	return p.allow[net.JoinHostPort(strings.ToLower(host), port)]
}

// Serve serves one client's connections from ln until ctx ends; then it closes ln and
// every connection and tunnel it opened, and returns nil. log receives the refusals.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	s := &session{p: p, log: log, tunnels: map[io.Closer]struct{}{}}
	lim := &limitListener{Listener: ln, slots: make(chan struct{}, p.maxConns), done: make(chan struct{})}
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 15 * time.Second,
		IdleTimeout:       p.idle,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lim) }()
	select {
	case <-ctx.Done():
		_ = srv.Close()
		s.closeTunnels()
		<-errc
		return nil
	case err := <-errc:
		s.closeTunnels()
		if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
			return nil
		}
		return err
	}
}

// session is one Serve call: its tunnels are closed when it ends.
type session struct {
	p       *Proxy
	log     *slog.Logger
	mu      sync.Mutex
	closed  bool
	tunnels map[io.Closer]struct{}
}

func (s *session) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		s.connect(w, r)
		return
	}
	if !r.URL.IsAbs() || r.URL.Scheme != "http" || r.URL.Host == "" {
		http.Error(w, "fnhook builder: only proxy requests (CONNECT host:port, or an absolute http:// URI)", http.StatusBadRequest)
		return
	}
	port := r.URL.Port()
	if port == "" {
		port = "80"
	}
	hp := net.JoinHostPort(r.URL.Hostname(), port)
	if !s.p.allowed(hp) {
		s.deny(w, hp)
		return
	}
	s.p.forwarder.ServeHTTP(w, r)
}

func (s *session) deny(w http.ResponseWriter, hostport string) {
	s.p.denied.Inc()
	s.log.Warn("egress denied", "host", hostport)
	http.Error(w, "fnhook builder: egress to "+hostport+" is not allowed (only the npm registry is)", http.StatusForbidden)
}

func (s *session) connect(w http.ResponseWriter, r *http.Request) {
	hp := r.URL.Host
	if hp == "" {
		hp = r.Host
	}
	if _, _, err := net.SplitHostPort(hp); err != nil {
		http.Error(w, "fnhook builder: CONNECT needs host:port", http.StatusBadRequest)
		return
	}
	if !s.p.allowed(hp) {
		s.deny(w, hp)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "fnhook builder: cannot tunnel", http.StatusInternalServerError)
		return
	}
	up, err := s.p.dialer.DialContext(r.Context(), "tcp", hp)
	if err != nil {
		http.Error(w, "fnhook builder: could not reach "+hp, http.StatusBadGateway)
		return
	}
	client, brw, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	if !s.track(client, up) {
		client.Close()
		up.Close()
		return
	}
	defer s.untrack(client, up)
	_ = client.SetDeadline(time.Time{})
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		client.Close()
		up.Close()
		return
	}
	// Bytes the client sent after its CONNECT (a TLS hello) are already buffered.
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			client.Close()
			up.Close()
			return
		}
	}
	Pipe(client, up, s.p.idle)
}

func (s *session) track(cs ...io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	for _, c := range cs {
		s.tunnels[c] = struct{}{}
	}
	return true
}

func (s *session) untrack(cs ...io.Closer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cs {
		delete(s.tunnels, c)
	}
}

func (s *session) closeTunnels() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.tunnels {
		_ = c.Close()
	}
	clear(s.tunnels)
}

// Pipe copies between a and b both ways until both directions ended, or until neither
// carried a byte for idle; then it closes both. An end of stream in one direction is
// passed on as a half close, so request-then-response protocols finish.
func Pipe(a, b net.Conn, idle time.Duration) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			_ = src.SetReadDeadline(time.Now().Add(idle))
			n, err := src.Read(buf)
			if n > 0 {
				last.Store(time.Now().UnixNano())
				_ = dst.SetWriteDeadline(time.Now().Add(idle))
				if _, werr := dst.Write(buf[:n]); werr != nil {
					a.Close()
					b.Close()
					return
				}
			}
			if err == nil {
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < idle {
				continue // the other direction is busy
			}
			if errors.Is(err, io.EOF) {
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
					return
				}
			}
			a.Close()
			b.Close()
			return
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// limitListener holds at most cap(slots) accepted connections at once.
type limitListener struct {
	net.Listener
	slots chan struct{}
	once  sync.Once
	done  chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite half-closes the connection when the underlying one can.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
