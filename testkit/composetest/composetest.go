// Package composetest checks docker-compose.yml against the binaries'
// configuration, since no Docker engine runs where the tests run: the
// services exist, their environment names are ones the binaries read, and
// their healthchecks call real commands on the configured ports.
package composetest

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// File is the part of a compose file the checks read.
type File struct {
	Services map[string]Service `yaml:"services"`
	Volumes  map[string]any     `yaml:"volumes"`
	Secrets  map[string]Secret  `yaml:"secrets"`
}

// Secret is a top-level compose secret; a service that lists it finds it
// at /run/secrets/<name>.
type Secret struct {
	// File is the host file, possibly with a variable and its default
	// (${NAME:-default}).
	File string `yaml:"file"`
}

// Service is one compose service.
type Service struct {
	Image       string            `yaml:"image"`
	Build       *Build            `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Healthcheck *Healthcheck      `yaml:"healthcheck"`
	Deploy      struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"deploy"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Ports   []string `yaml:"ports"`
	Volumes []string `yaml:"volumes"`
	// Profiles, when set, start the service only with one of them
	// (docker compose --profile NAME up).
	Profiles []string `yaml:"profiles"`
	// Secrets names top-level secrets mounted under /run/secrets/.
	Secrets []string `yaml:"secrets"`
	// StopGracePeriod is how long Docker waits after SIGTERM before
	// SIGKILL (default 10s).
	StopGracePeriod string `yaml:"stop_grace_period"`
}

// Build is a service's build section.
type Build struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

// Healthcheck is a service's healthcheck.
type Healthcheck struct {
	Test []string `yaml:"test"`
}

// Load parses a compose file (anchors and merge keys resolved).
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read compose file: %w", err)
	}
	var f File
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("parse compose file: %w", err)
	}
	return &f, nil
}

// EnvNames returns every environment variable a kong grammar reads (its
// `env` tags), for the command path given (e.g. "run"); an empty path
// collects every command's.
func EnvNames(grammar any, path ...string) map[string]bool {
	out := map[string]bool{}
	collect(reflect.TypeOf(grammar), path, out)
	return out
}

func collect(t reflect.Type, path []string, out map[string]bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if env := f.Tag.Get("env"); env != "" {
			for _, name := range strings.Split(env, ",") {
				out[name] = true
			}
		}
		_, isCmd := f.Tag.Lookup("cmd")
		switch {
		case isCmd:
			name := f.Tag.Get("name")
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			if len(path) == 0 {
				collect(f.Type, nil, out)
			} else if path[0] == name {
				collect(f.Type, path[1:], out)
			}
		case f.Anonymous:
			collect(f.Type, path, out)
		}
	}
}

// Commands returns the names of a kong grammar's top-level commands.
func Commands(grammar any) map[string]bool {
	out := map[string]bool{}
	t := reflect.TypeOf(grammar)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if _, ok := f.Tag.Lookup("cmd"); ok {
			name := f.Tag.Get("name")
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			out[name] = true
		}
	}
	return out
}

// Mount returns the host path a service mounts at target (a bind mount
// "host:target[:ro]"), or "" when it mounts nothing there.
func (s Service) Mount(target string) string {
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == target {
			return parts[0]
		}
	}
	return ""
}

// DefaultOf returns the default of a value written ${NAME:-default}, or
// the value itself when it names no variable.
func DefaultOf(v string) string {
	if strings.HasPrefix(v, "${") && strings.HasSuffix(v, "}") {
		if _, def, ok := strings.Cut(v[2:len(v)-1], ":-"); ok {
			return def
		}
	}
	return v
}

// Prometheus is the part of a Prometheus configuration the checks read.
type Prometheus struct {
	RuleFiles []string `yaml:"rule_files"`
	Alerting  struct {
		Alertmanagers []struct {
			StaticConfigs []StaticConfig `yaml:"static_configs"`
		} `yaml:"alertmanagers"`
	} `yaml:"alerting"`
	ScrapeConfigs []ScrapeConfig `yaml:"scrape_configs"`
}

// StaticConfig lists targets as host:port.
type StaticConfig struct {
	Targets []string `yaml:"targets"`
}

// ScrapeConfig is one job: static targets, or DNS names with a port.
type ScrapeConfig struct {
	JobName       string         `yaml:"job_name"`
	StaticConfigs []StaticConfig `yaml:"static_configs"`
	DNSSDConfigs  []struct {
		Names []string `yaml:"names"`
		Type  string   `yaml:"type"`
		Port  int      `yaml:"port"`
	} `yaml:"dns_sd_configs"`
}

// LoadPrometheus parses a Prometheus configuration file.
func LoadPrometheus(path string) (*Prometheus, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read prometheus config: %w", err)
	}
	var p Prometheus
	if err := yaml.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("parse prometheus config: %w", err)
	}
	return &p, nil
}

// Targets returns the host:port pairs job scrapes: its static targets and
// its DNS names with their port (a compose service name resolves to each
// of its containers).
func (p *Prometheus) Targets(job string) []string {
	var out []string
	for _, sc := range p.ScrapeConfigs {
		if sc.JobName != job {
			continue
		}
		for _, st := range sc.StaticConfigs {
			out = append(out, st.Targets...)
		}
		for _, d := range sc.DNSSDConfigs {
			for _, n := range d.Names {
				out = append(out, n+":"+strconv.Itoa(d.Port))
			}
		}
	}
	return out
}

// Scrapes reports whether job scrapes host:port.
func (p *Prometheus) Scrapes(job, hostPort string) bool {
	return slices.Contains(p.Targets(job), hostPort)
}

// AlertmanagerTargets returns the Alertmanagers alerts are sent to.
func (p *Prometheus) AlertmanagerTargets() []string {
	var out []string
	for _, am := range p.Alerting.Alertmanagers {
		for _, st := range am.StaticConfigs {
			out = append(out, st.Targets...)
		}
	}
	return out
}
