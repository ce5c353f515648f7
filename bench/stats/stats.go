// Package stats turns latency samples into the figures the benchmark reports: nearest-rank
// percentiles, mean, min and max, all in milliseconds.
package stats

import (
	"math"
	"slices"
	"time"
)

// Summary describes a set of latency samples, in milliseconds. The zero Summary means no
// samples.
type Summary struct {
	N    int     `json:"n"`
	Min  float64 `json:"minMs"`
	P50  float64 `json:"p50Ms"`
	P90  float64 `json:"p90Ms"`
	P99  float64 `json:"p99Ms"`
	Max  float64 `json:"maxMs"`
	Mean float64 `json:"meanMs"`
}

// Summarize sorts a copy of samples and describes them.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	var sum float64
	for _, d := range s {
		sum += Ms(d)
	}
	return Summary{
		N:    len(s),
		Min:  Ms(s[0]),
		P50:  Ms(Percentile(s, 50)),
		P90:  Ms(Percentile(s, 90)),
		P99:  Ms(Percentile(s, 99)),
		Max:  Ms(s[len(s)-1]),
		Mean: sum / float64(len(s)),
	}
}

// Percentile is the nearest-rank p-th percentile (0 < p <= 100) of sorted: the smallest
// sample such that at least p% of the samples are at or below it. Nearest rank never
// invents a value between two samples, so a p99 over 50 cold calls is the worst but one
// (rank 50 of 50 is the max: ceil(0.99*50) = 50). Zero for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}

// Ms converts d to fractional milliseconds.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Round3 rounds v to three decimals (microseconds when v is in ms), for reports.
func Round3(v float64) float64 { return math.Round(v*1000) / 1000 }
