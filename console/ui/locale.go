package ui

import (
	"embed"
	"encoding/json"
	"fmt"
	"net/http"

	"golang.org/x/text/language"
)

//go:embed locale/*.json
var localeFiles embed.FS

// catalog is one language's messages, by key.
type catalog struct {
	lang     string
	messages map[string]string
}

// t returns the message for key, formatted with args; a missing key shows
// itself, so a test finds it.
func (c *catalog) t(key string, args ...any) string {
	m, ok := c.messages[key]
	if !ok {
		return key
	}
	if len(args) == 0 {
		return m
	}
	return fmt.Sprintf(m, args...)
}

// locales picks a catalog by Accept-Language: Norwegian (bokmål; "no" and
// "nn" fall back to it) or English, the default.
type locales struct {
	matcher  language.Matcher
	catalogs []*catalog
}

func loadLocales() (*locales, error) {
	l := &locales{}
	tags := []language.Tag{language.English, language.MustParse("nb")}
	for _, tag := range tags {
		b, err := localeFiles.ReadFile("locale/" + tag.String()[:2] + ".json")
		if err != nil {
			return nil, err
		}
		c := &catalog{lang: tag.String()}
		if err := json.Unmarshal(b, &c.messages); err != nil {
			return nil, fmt.Errorf("locale %s: %w", tag, err)
		}
		l.catalogs = append(l.catalogs, c)
	}
	l.matcher = language.NewMatcher(tags)
	return l, nil
}

func (l *locales) forRequest(r *http.Request) *catalog {
	_, i, _ := l.matcher.Match(parseAccept(r.Header.Get("Accept-Language"))...)
	return l.catalogs[i]
}

func parseAccept(h string) []language.Tag {
	tags, _, err := language.ParseAcceptLanguage(h)
	if err != nil || len(tags) == 0 {
		return []language.Tag{language.English}
	}
	return tags
}
