package stats

import (
	"testing"
	"time"
)

func ms(v ...float64) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x * float64(time.Millisecond))
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	fifty := hundred[:50]
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample is every percentile", ms(7), 99, 7 * time.Millisecond},
		{"one sample p50", ms(7), 50, 7 * time.Millisecond},
		{"median of odd count", ms(1, 2, 3), 50, 2 * time.Millisecond},
		{"median of even count takes the lower", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p99 of 100 is rank 99", hundred, 99, 99 * time.Millisecond},
		{"p90 of 100 is rank 90", hundred, 90, 90 * time.Millisecond},
		{"p100 is the max", hundred, 100, 100 * time.Millisecond},
		{"p99 of 50 is the max", fifty, 99, 50 * time.Millisecond},
		{"p50 of 50 is rank 25", fifty, 50, 25 * time.Millisecond},
		{"tiny p is the min", hundred, 0.001, 1 * time.Millisecond},
		{"p0 clamps to the min", hundred, 0, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Fatalf("Percentile(p=%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name    string
		samples []time.Duration
		want    Summary
	}{
		{"no samples", nil, Summary{}},
		{"unsorted input", ms(3, 1, 2), Summary{N: 3, Min: 1, P50: 2, P90: 3, P99: 3, Max: 3, Mean: 2}},
		{"sub-millisecond", ms(0.25, 0.5, 0.75, 1), Summary{N: 4, Min: 0.25, P50: 0.5, P90: 1, P99: 1, Max: 1, Mean: 0.625}},
		{"outlier shows in p99 and max only", ms(1, 1, 1, 1, 1, 1, 1, 1, 1, 100),
			Summary{N: 10, Min: 1, P50: 1, P90: 1, P99: 100, Max: 100, Mean: 10.9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Summarize(tt.samples)
			got.Mean = Round3(got.Mean)
			if got != tt.want {
				t.Fatalf("Summarize = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSummarizeLeavesInputAlone(t *testing.T) {
	in := ms(3, 1, 2)
	Summarize(in)
	if in[0] != 3*time.Millisecond || in[1] != time.Millisecond {
		t.Fatalf("input was reordered: %v", in)
	}
}

func TestRound3(t *testing.T) {
	tests := []struct{ in, want float64 }{{0.12345, 0.123}, {1.0005, 1.001}, {2, 2}, {-0.0004, 0}}
	for _, tt := range tests {
		if got := Round3(tt.in); got != tt.want {
			t.Errorf("Round3(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
