package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/fnhook/fnhook/libs/blob"
	"github.com/fnhook/fnhook/libs/testinfra"
)

func TestPutGet(t *testing.T) {
	env := testinfra.Start(t)
	b := env.Blob(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte("fnhook"), 10000)
	if err := b.Put(ctx, "modules/x/1.0.0.tgz", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("put: %v", err)
	}
	r, size, err := b.Get(ctx, "modules/x/1.0.0.tgz")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	defer r.Close()
	got, _ := io.ReadAll(r)
	if size != int64(len(data)) || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (size %d), want %d identical bytes", len(got), size, len(data))
	}
	if _, _, err := b.Get(ctx, "modules/x/2.0.0.tgz"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("missing key: got %v, want ErrNotFound", err)
	}
}
