// Package logging builds the JSON slog logger every fnhook service uses.
package logging

import (
	"io"
	"log/slog"
)

// New returns a JSON logger at level ("debug", "info", "warn", "error") tagged with service.
func New(w io.Writer, service, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})).With("service", "fnhook-"+service)
}
