package main

import (
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
	URL     string        `env:"INGRESS_URL" default:"http://127.0.0.1:8080/webhooks/portal" help:"Webhook endpoint."`
	Secrets string        `env:"PORTAL_WEBHOOK_SECRETS" help:"Secret(s) to sign with; every one listed signs. Required."`
	File    string        `short:"f" type:"existingfile" help:"JSON event to send as it is; without it a sample event is built from the flags below."`
	Type    string        `default:"membership-created" help:"Sample event type."`
	Member  string        `default:"demo-member-1" help:"Sample member ID."`
	Org     string        `default:"demo-org-1" help:"Sample organization ID."`
	OrgName string        `default:"HLF Demo" help:"Sample organization name."`
	Role    string        `default:"peer_mentor" help:"Sample role (empty for none)."`
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
	ev := event.Event{
		ID:           id,
		Type:         event.Type(s.Type),
		OccurredAt:   time.Now().UTC().Truncate(time.Millisecond),
		Organization: event.Organization{ID: s.Org, Name: s.OrgName},
		// Fictional sample data.
		Member: event.Member{ID: s.Member, Email: s.Member + "@example.invalid", FirstName: "Demo", LastName: "Medlem", Phone: "+47 400 00 000"},
		Role:   event.Role(s.Role),
	}
	b, err := json.Marshal(ev)
	return b, id, err
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
