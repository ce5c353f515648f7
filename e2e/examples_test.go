package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func example(t *testing.T, name string) string {
	b, err := os.ReadFile(filepath.Join("..", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestExampleGitHubPushToSlack deploys examples/github-push-to-slack.js and sends it a
// signed push event the way GitHub does.
func TestExampleGitHubPushToSlack(t *testing.T) {
	a := admin(t)
	tn := a.newTenant("e2e-gh")
	a.must(201, "PUT", "/v1/tenants/"+tn+"/functions/push", map[string]any{
		"code": example(t, "github-push-to-slack.js"), "configuration": map[string]string{"GITHUB_WEBHOOK_SECRET": "It's a Secret to Everybody"},
	})
	a.waitReady(tn, "push", time.Minute)
	payload := []byte(`{"ref":"refs/heads/main",  "repository":{"full_name":"octo/caf\u00e9"},
 "pusher":{"name":"octocat"},"commits":[{"id":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c","url":"https://example.invalid/c/1","message":"Fix the thing\n\nlong text","author":{"name":"Mona"}}]}`)
	mac := hmac.New(sha256.New, []byte("It's a Secret to Everybody"))
	mac.Write(payload)
	sig := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	hdr := map[string]string{"Content-Type": "application/json", "X-GitHub-Event": "push", "X-Hub-Signature-256": sig}
	resp, body := call(t, "POST", "/run/"+tn+"/push", payload, hdr)
	m := jsonBody(body)
	if resp.StatusCode != 200 || m["text"] != "octocat pushed 1 commit to octo/café@main" || !strings.Contains(fmt.Sprint(m["blocks"]), "0d1a26e> Fix the thing — Mona") {
		t.Fatalf("signed push: %d %s", resp.StatusCode, body)
	}
	// One byte changed after signing: refused.
	resp, body = call(t, "POST", "/run/"+tn+"/push", append(payload, ' '), hdr)
	if resp.StatusCode != 401 {
		t.Fatalf("a tampered body verified: %d %s", resp.StatusCode, body)
	}
}

// TestExampleStripeFilter deploys the ES-module Stripe filter and sends it events signed
// as Stripe signs them.
func TestExampleStripeFilter(t *testing.T) {
	a := admin(t)
	tn := a.newTenant("e2e-stripe")
	a.must(201, "PUT", "/v1/tenants/"+tn+"/functions/pay", map[string]any{
		"code":          example(t, "stripe-payment-filter.mjs"),
		"configuration": map[string]string{"STRIPE_WEBHOOK_SECRET": "whsec_test_123", "MIN_AMOUNT": "1000"},
	})
	a.waitReady(tn, "pay", time.Minute)
	send := func(payload string) (int, map[string]any) {
		ts := fmt.Sprint(time.Now().Unix())
		mac := hmac.New(sha256.New, []byte("whsec_test_123"))
		mac.Write([]byte(ts + "." + payload))
		resp, body := call(t, "POST", "/run/"+tn+"/pay", []byte(payload), map[string]string{
			"Content-Type": "application/json", "Stripe-Signature": "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil)),
		})
		return resp.StatusCode, jsonBody(body)
	}
	status, m := send(`{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1","amount":2500,"currency":"eur"}}}`)
	if status != 200 || m["forward"] != true || m["id"] != "pi_1" {
		t.Fatalf("big payment: %d %v", status, m)
	}
	status, m = send(`{"id":"evt_2","type":"payment_intent.succeeded","data":{"object":{"id":"pi_2","amount":10,"currency":"eur"}}}`)
	if status != 202 || m["ignored"] != "below threshold" {
		t.Fatalf("small payment: %d %v", status, m)
	}
	resp, body := call(t, "POST", "/run/"+tn+"/pay", []byte(`{"type":"x"}`), map[string]string{"Stripe-Signature": "t=1,v1=00"})
	if resp.StatusCode != 400 {
		t.Fatalf("unsigned event: %d %s", resp.StatusCode, body)
	}
}

// TestExampleExpressApp deploys the Express example (third form, a real npm module built
// by the builder) and checks it routes, sees the query and parses its own body.
func TestExampleExpressApp(t *testing.T) {
	a := admin(t)
	tn := a.newTenant("e2e-express")
	a.must(201, "PUT", "/v1/tenants/"+tn+"/functions/orders", map[string]any{
		"code": example(t, "express-orders.js"), "dependencies": map[string]string{"express": "^4.21.0"},
	})
	a.waitReady(tn, "orders", 4*time.Minute)
	resp, body := call(t, "GET", "/run/"+tn+"/orders/orders/42?expand=items", nil, nil)
	if m := jsonBody(body); resp.StatusCode != 200 || m["id"] != "42" || m["expand"] != "items" {
		t.Fatalf("GET order: %d %s", resp.StatusCode, body)
	}
	resp, body = call(t, "POST", "/run/"+tn+"/orders/orders", []byte(`{"items":[1,2,3]}`), map[string]string{"Content-Type": "application/json"})
	if m := jsonBody(body); resp.StatusCode != 201 || m["items"] != 3.0 {
		t.Fatalf("POST order: %d %s", resp.StatusCode, body)
	}
}
