package main

import (
	"strings"
	"testing"
)

func TestSections(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"", "", false},
		{"tenants,burst,runner", "tenants,burst,runner", false},
		{" cold , create,", "cold,create", false},
		{"tenant", "", true},
		{"warm,everything", "", true},
	}
	for _, tt := range tests {
		got, err := sections(tt.in)
		if (err != nil) != tt.wantErr || strings.Join(got, ",") != tt.want {
			t.Errorf("sections(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
