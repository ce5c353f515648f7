package config

import (
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) *Env { return New(func(k string) string { return m[k] }) }

func TestReaders(t *testing.T) {
	tests := []struct {
		name    string
		vars    map[string]string
		read    func(*Env) any
		want    any
		wantErr string
	}{
		{"int default", nil, func(e *Env) any { return e.Int("FNHOOK_N", 7, 1, 10) }, 7, ""},
		{"int set", map[string]string{"FNHOOK_N": "3"}, func(e *Env) any { return e.Int("FNHOOK_N", 7, 1, 10) }, 3, ""},
		{"int bad", map[string]string{"FNHOOK_N": "x"}, func(e *Env) any { return e.Int("FNHOOK_N", 7, 1, 10) }, 7, "FNHOOK_N"},
		{"int range", map[string]string{"FNHOOK_N": "11"}, func(e *Env) any { return e.Int("FNHOOK_N", 7, 1, 10) }, 7, "between 1 and 10"},
		{"addr bad port", map[string]string{"FNHOOK_LISTEN": "127.0.0.1:http"}, func(e *Env) any { return e.Addr("FNHOOK_LISTEN", ":1") }, ":1", "FNHOOK_LISTEN"},
		{"addr no port", map[string]string{"FNHOOK_LISTEN": "127.0.0.1"}, func(e *Env) any { return e.Addr("FNHOOK_LISTEN", ":1") }, ":1", "host:port"},
		{"duration", map[string]string{"FNHOOK_D": "2s"}, func(e *Env) any { return e.Duration("FNHOOK_D", time.Second) }, 2 * time.Second, ""},
		{"duration bad", map[string]string{"FNHOOK_D": "soon"}, func(e *Env) any { return e.Duration("FNHOOK_D", time.Second) }, time.Second, "FNHOOK_D"},
		{"bool bad", map[string]string{"FNHOOK_B": "maybe"}, func(e *Env) any { return e.Bool("FNHOOK_B", true) }, true, "FNHOOK_B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := env(tt.vars)
			if got := tt.read(e); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			err := e.Err()
			if tt.wantErr == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestSecretNeverInError(t *testing.T) {
	e := env(map[string]string{"FNHOOK_ADMIN_KEY": "short"})
	e.Secret("FNHOOK_ADMIN_KEY", 16)
	if e.Err() == nil || strings.Contains(e.Err().Error(), "short") {
		t.Fatalf("want an error that names the variable but not the value, got %v", e.Err())
	}
}
