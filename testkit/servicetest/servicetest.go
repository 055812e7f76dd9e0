// Package servicetest holds what tests of the portalsync services share.
package servicetest

import (
	"net/http"
	"testing"
	"time"
)

// WaitReady waits up to 20 s until base + "/readyz" answers 200, asked with
// client (http.DefaultClient when nil), and fails the test otherwise.
func WaitReady(t testing.TB, base string, client *http.Client) {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s/readyz never answered 200 within 20 s", base)
}
