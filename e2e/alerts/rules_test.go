// Package alerts tests the alerting that ships in deploy/: the rules of
// deploy/prometheus/alerts.yml with promtool (`promtool check` and the
// unit tests of alerts_test.yml), and that every alert is tested, has a
// runbook in docs/OPERATIONS.md and is routed by Alertmanager.
package alerts

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

var (
	promDir  = filepath.Join("..", "..", "deploy", "prometheus")
	rules    = filepath.Join(promDir, "alerts.yml")
	amConfig = filepath.Join("..", "..", "deploy", "alertmanager", "alertmanager.yml")
	runbooks = filepath.Join("..", "..", "docs", "OPERATIONS.md")
)

// promtool returns the path of promtool (Debian's prometheus package). It
// skips the test where promtool is missing, and fails it under CI=true,
// whose .ci/run installs it.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("promtool is required under CI=true (.ci/run installs it: apt-get install prometheus): %v", err)
	}
	t.Skip("promtool not installed (apt-get install prometheus, or .ci/run); CI=true fails instead")
	return ""
}

// The rules and the Prometheus configuration that loads them are valid,
// and every unit test of alerts_test.yml passes.
func TestPromtool(t *testing.T) {
	t.Parallel()
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"check", "config", "prometheus.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		t.Run(strings.Join(args[:2], "_"), func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(bin, args...)
			cmd.Dir = promDir
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
			t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
		})
	}
}

type ruleFile struct {
	Groups []struct {
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type testFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func loadYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, v), path)
}

// alertNames returns the alerts of alerts.yml.
func alertNames(t *testing.T) []string {
	t.Helper()
	var rf ruleFile
	loadYAML(t, rules, &rf)
	var names []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				names = append(names, r.Alert)
			}
		}
	}
	return names
}

// Every alert has a severity Alertmanager routes on, a unit test in which
// it fires and one in which it stays quiet, and a runbook_url that links
// to its own heading in docs/OPERATIONS.md.
func TestEveryAlertTestedAndDocumented(t *testing.T) {
	t.Parallel()
	var rf ruleFile
	loadYAML(t, rules, &rf)
	var tf testFile
	loadYAML(t, filepath.Join(promDir, "alerts_test.yml"), &tf)
	require.Equal(t, []string{"alerts.yml"}, tf.RuleFiles)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	doc, err := os.ReadFile(runbooks)
	require.NoError(t, err)
	headings := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#{2,4} (Portalsync[A-Za-z]+)$`).FindAllStringSubmatch(string(doc), -1) {
		headings[m[1]] = true
	}
	names := alertNames(t)
	require.NotEmpty(t, names)
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			require.Contains(t, []string{"warning", "critical"}, r.Labels["severity"], r.Alert)
			require.True(t, fires[r.Alert], "%s: no unit test in which it fires", r.Alert)
			require.True(t, quiet[r.Alert], "%s: no unit test in which it stays quiet", r.Alert)
			require.NotEmpty(t, r.Annotations["summary"], r.Alert)
			require.NotEmpty(t, r.Annotations["description"], r.Alert)
			require.True(t, headings[r.Alert], "docs/OPERATIONS.md has no runbook heading %q", r.Alert)
			require.True(t, strings.HasSuffix(r.Annotations["runbook_url"], "/docs/OPERATIONS.md#"+strings.ToLower(r.Alert)),
				"%s: runbook_url %s", r.Alert, r.Annotations["runbook_url"])
		}
	}
	for name := range fires {
		require.True(t, slices.Contains(names, name), "alerts_test.yml tests %s, which alerts.yml does not have", name)
	}
	for name := range headings {
		require.True(t, slices.Contains(names, name), "docs/OPERATIONS.md has a runbook for %s, which alerts.yml does not have", name)
	}
}

type amFile struct {
	Route struct {
		Receiver string `yaml:"receiver"`
		Routes   []struct {
			Receiver string `yaml:"receiver"`
		} `yaml:"routes"`
	} `yaml:"route"`
	InhibitRules []struct {
		SourceMatchers []string `yaml:"source_matchers"`
		TargetMatchers []string `yaml:"target_matchers"`
	} `yaml:"inhibit_rules"`
	Receivers []struct {
		Name           string `yaml:"name"`
		WebhookConfigs []struct {
			URLFile string `yaml:"url_file"`
		} `yaml:"webhook_configs"`
	} `yaml:"receivers"`
}

// Alertmanager's configuration sends everything to a receiver it defines
// (a webhook whose URL is the compose secret's file), and its inhibit
// rules name alerts that exist. (Debian's amtool, 0.25, is older than
// url_file; the compose image is v0.28.)
func TestAlertmanagerRoutesEveryAlert(t *testing.T) {
	t.Parallel()
	var am amFile
	loadYAML(t, amConfig, &am)
	receivers := map[string]bool{}
	for _, r := range am.Receivers {
		receivers[r.Name] = true
		for _, w := range r.WebhookConfigs {
			require.Equal(t, "/run/secrets/alertmanager_webhook_url", w.URLFile, "the compose secret's mount")
		}
	}
	require.True(t, receivers[am.Route.Receiver], "the default route's receiver %q exists", am.Route.Receiver)
	for _, r := range am.Route.Routes {
		require.True(t, receivers[r.Receiver], "receiver %q exists", r.Receiver)
	}
	names := alertNames(t)
	alertname := regexp.MustCompile(`alertname=~?"([^"]+)"`)
	for _, ir := range am.InhibitRules {
		for _, m := range append(ir.SourceMatchers, ir.TargetMatchers...) {
			sm := alertname.FindStringSubmatch(m)
			require.NotNil(t, sm, "inhibit matcher %s names an alert", m)
			for _, name := range strings.Split(sm[1], "|") {
				require.True(t, slices.Contains(names, name), "inhibit rule names %s, which alerts.yml does not have", name)
			}
		}
	}
}
