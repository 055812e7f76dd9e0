package supabasetest_test

import (
	"context"
	"os"
	"testing"

	"github.com/likeperson/portalsync/testkit/supabasetest"
)

func TestMain(m *testing.M) { os.Exit(supabasetest.Main(m)) }

// The harness gives a Supabase-shaped database whose auth schema is
// GoTrue's own, and a GoTrue that signs users up and in with the project's
// hook enabled.
func TestSignUpAndSignInThroughGoTrue(t *testing.T) {
	c := supabasetest.Get(t)
	db := c.NewDatabase(t, supabasetest.Project)
	auth := db.StartAuth(t)
	ctx := context.Background()

	up, err := auth.SignUp(ctx, "Harness@Example.invalid", "a-long-password-1")
	if err != nil || !up.OK() {
		t.Fatalf("sign up: %v %d %s", err, up.Status, up.Body)
	}
	in, err := auth.SignIn(ctx, "harness@example.invalid", "a-long-password-1")
	if err != nil || !in.OK() {
		t.Fatalf("sign in: %v %d %s", err, in.Status, in.Body)
	}
	claims, err := supabasetest.Claims(in.Session.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if roles, ok := claims["org_roles"].([]any); !ok || len(roles) != 0 {
		t.Fatalf("org_roles claim from the hook: %#v", claims["org_roles"])
	}
	ref, err := auth.Refresh(ctx, in.Session.RefreshToken)
	if err != nil || !ref.OK() {
		t.Fatalf("refresh: %v %d %s", err, ref.Status, ref.Body)
	}
}
