// Package alerts tests the alerting that ships in deploy/: the rules of
// deploy/prometheus/alerts.yml with promtool (`promtool check` and the
// unit tests of alerts_test.yml), and that every alert is tested, has a
// runbook in docs/OPERATIONS.md and is routed by Alertmanager.
package alerts

import (
	"encoding/json"
	"fmt"
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

// Every query of the Grafana dashboard is valid PromQL: promtool checks
// them as the expressions of recording rules. (That the metrics they name
// are exported: e2e.TestMetricsScraped.)
func TestDashboardQueriesParse(t *testing.T) {
	t.Parallel()
	bin := promtool(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "dashboards", "portalsync.json"))
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(b, &dash))
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var recs []rule
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, "panel %q queries nothing", p.Title)
		for _, tg := range p.Targets {
			require.NotEmpty(t, tg.Expr, "panel %q", p.Title)
			recs = append(recs, rule{Record: fmt.Sprintf("dashboard:panel_%d_%s", p.ID, tg.RefID), Expr: tg.Expr})
		}
	}
	out, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": recs}}})
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "dashboard.yml")
	require.NoError(t, os.WriteFile(path, out, 0o600))
	res, err := exec.Command(bin, "check", "rules", path).CombinedOutput()
	require.NoError(t, err, "%s", res)
	require.Contains(t, string(res), fmt.Sprintf("SUCCESS: %d rules found", len(recs)))
}

// The dashboard shows what the alerts watch: the pause, the oldest
// unapplied event's age against the two-minute line (a threshold at
// 120 s), dead letters and failed rows, the reconciliation's position and
// last success, refused Dataverse deliveries and the stream's fullness.
func TestDashboardShowsWhatAlertsWatch(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "dashboards", "portalsync.json"))
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title       string `json:"title"`
			FieldConfig struct {
				Defaults struct {
					Thresholds struct {
						Steps []struct {
							Value *float64 `json:"value"`
						} `json:"steps"`
					} `json:"thresholds"`
				} `json:"defaults"`
			} `json:"fieldConfig"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(b, &dash))
	panelsWith := func(metric string) []int {
		var out []int
		for i, p := range dash.Panels {
			for _, tg := range p.Targets {
				if strings.Contains(tg.Expr, metric) {
					out = append(out, i)
					break
				}
			}
		}
		return out
	}
	for _, metric := range []string{"portalsync_syncer_paused", "portalsync_syncer_dead_letters_total",
		`portalsync_syncer_events_total{status="failed"}`, "portalsync_reconcile_last_success_timestamp_seconds",
		"portalsync_reconcile_table_read_timestamp_seconds", "portalsync_ingress_dataverse_untranslated_total",
		"portalsync_syncer_stream_max_bytes"} {
		require.NotEmpty(t, panelsWith(metric), "a panel shows %s", metric)
	}
	promise := false
	for _, i := range panelsWith("portalsync_syncer_oldest_unapplied_seconds") {
		for _, s := range dash.Panels[i].FieldConfig.Defaults.Thresholds.Steps {
			if s.Value != nil && *s.Value == 120 {
				promise = true
			}
		}
	}
	require.True(t, promise, "the oldest unapplied event's age is drawn against a 120 s threshold")
}
