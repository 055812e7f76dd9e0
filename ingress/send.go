package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/portalclient"
	"github.com/likeperson/portalsync/pkg/signature"
)

type sendCmd struct {
	URL     string `env:"INGRESS_URL" default:"http://127.0.0.1:8080/webhooks/portal" help:"Webhook endpoint."`
	Secrets string `env:"PORTAL_WEBHOOK_SECRETS" help:"Secret(s) to sign with; every one listed signs. Required."`
	// -f sends a file as it is: the sample flags would be silently ignored.
	// Their defaults are applied in sample, not by kong, which would take a
	// default for a flag given and refuse it beside -f.
	File    string        `short:"f" type:"existingfile" xor:"f-type,f-member,f-org,f-orgname,f-role" help:"JSON event to send as it is; without it a sample event is built from the flags below (not with them)."`
	Type    string        `xor:"f-type" help:"Sample event type (default membership-created)."`
	Member  string        `xor:"f-member" help:"Sample member ID (default demo-member-1)."`
	Org     string        `xor:"f-org" help:"Sample organization ID (default demo-org-1)."`
	OrgName string        `xor:"f-orgname" help:"Sample organization name (default HLF Demo)."`
	Role    string        `xor:"f-role" help:"Sample role. Default: peer_mentor where the type needs one (membership-created, role-updated); other types carry a role only when given."`
	Timeout time.Duration `default:"10s" help:"Request timeout."`
}

func (s *sendCmd) Run(ctx context.Context, g *command.Globals) error {
	secrets, err := signature.ParseSecrets(s.Secrets)
	if err != nil {
		return fmt.Errorf("PORTAL_WEBHOOK_SECRETS: %w", err)
	}
	body, id, err := s.body()
	if err != nil {
		return err
	}
	fmt.Fprintln(g.Stdout, "sent "+describe(body))
	client := &portalclient.Client{URL: s.URL, Signer: signature.NewSigner(secrets...), HTTP: &http.Client{Timeout: s.Timeout}}
	resp, err := client.Send(ctx, id, body)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.Stdout, "%d %s\n%s\n", resp.Status, http.StatusText(resp.Status), strings.TrimSpace(string(resp.Body)))
	if resp.Status/100 != 2 {
		return fmt.Errorf("ingress answered %d", resp.Status)
	}
	return nil
}

// describe says in one line what an event is and whom it concerns (IDs
// and the role only: the profile fields are personal data).
func describe(body []byte) string {
	var ev struct {
		ID           string `json:"id"`
		Type         string `json:"type"`
		Organization *struct {
			ID string `json:"id"`
		} `json:"organization"`
		Member struct {
			ID string `json:"id"`
		} `json:"member"`
		Role string `json:"role"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		return "an event that is not JSON"
	}
	line := fmt.Sprintf("%s %s: member %s", ev.Type, ev.ID, ev.Member.ID)
	if ev.Organization != nil {
		line += " in organization " + ev.Organization.ID
	}
	if ev.Role != "" {
		return line + ", role " + ev.Role
	}
	return line + ", no role"
}

// body returns the event to send and its id.
func (s *sendCmd) body() ([]byte, string, error) {
	if s.File != "" {
		b, err := os.ReadFile(s.File)
		if err != nil {
			return nil, "", fmt.Errorf("read event: %w", err)
		}
		var head struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(b, &head); err != nil || head.ID == "" {
			return nil, "", fmt.Errorf("%s: the event needs a string \"id\"", s.File)
		}
		return b, head.ID, nil
	}
	id, err := newEventID()
	if err != nil {
		return nil, "", err
	}
	b, err := json.Marshal(s.sample(id, time.Now()))
	return b, id, err
}

// sample builds the sample event: each type carries what the portal sends
// with it, so that it changes only what its name says: the profile fields
// go with membership-created and membership-updated, a role with the types
// that need one (or when --role is given).
func (s *sendCmd) sample(id string, now time.Time) event.Event {
	t := event.Type(cmp.Or(s.Type, string(event.MembershipCreated)))
	member := cmp.Or(s.Member, "demo-member-1")
	ev := event.Event{
		ID:           id,
		Type:         t,
		OccurredAt:   now.UTC().Truncate(time.Millisecond),
		Organization: event.Organization{ID: cmp.Or(s.Org, "demo-org-1"), Name: cmp.Or(s.OrgName, "HLF Demo")},
		Member:       event.Member{ID: member},
		Role:         event.Role(s.Role),
	}
	if t == event.MembershipCreated || t == event.MembershipUpdated {
		// Fictional sample data.
		ev.Member = event.Member{ID: member, Email: member + "@example.invalid", FirstName: "Demo", LastName: "Medlem", Phone: "+47 400 00 000"}
	}
	if ev.Role == "" && t.RequiresRole() {
		ev.Role = event.RolePeerMentor
	}
	return ev
}

func newEventID() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random id: %w", err)
	}
	return "evt_" + base64.RawURLEncoding.EncodeToString(b), nil
}

type genkeyCmd struct{}

func (genkeyCmd) Run(g *command.Globals) error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("random key: %w", err)
	}
	sec, err := signature.NewSecret(key)
	if err != nil {
		return err
	}
	fmt.Fprintln(g.Stdout, sec.Text())
	return nil
}
