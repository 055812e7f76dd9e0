package server

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/event"
)

// ProblemContentType is the media type of error bodies (RFC 9457).
const ProblemContentType = "application/problem+json"

// problemTypeBase prefixes the type URI of each problem.
const problemTypeBase = "urn:portalsync:problem:"

// Problem is an RFC 9457 problem detail, the body of every error response.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Reason classifies a signature failure, a webhook-id conflict
	// ("webhook_id_conflict"), or a repeated webhook-id whose stored body
	// could not be read to compare ("store_unavailable").
	Reason string `json:"reason,omitempty"`
	// Errors lists each invalid field of the event.
	Errors []event.FieldError `json:"errors,omitempty"`

	retryAfter time.Duration
	cause      error
}

func (p *Problem) Error() string { return p.Title + ": " + p.Detail }

func (p *Problem) Unwrap() error { return p.cause }

func newProblem(status int, slug, title, detail string) *Problem {
	return &Problem{Type: problemTypeBase + slug, Title: title, Status: status, Detail: detail}
}

// errorHandler writes every error as problem+json: a *Problem as it is, an
// echo error (unknown route, wrong method) by its status, anything else as
// a 500 that is logged.
func errorHandler(log *zap.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		var p *Problem
		var he *echo.HTTPError
		switch {
		case errors.As(err, &p):
		case errors.As(err, &he):
			title := http.StatusText(he.Code)
			p = newProblem(he.Code, slugFor(he.Code), title, title)
		default:
			log.Error("internal error", zap.Error(err))
			p = newProblem(http.StatusInternalServerError, "internal", "Internal error", "the request could not be processed")
		}
		if p.retryAfter > 0 {
			c.Response().Header().Set("Retry-After", strconv.Itoa(int(p.retryAfter.Round(time.Second)/time.Second)))
		}
		c.Response().Header().Set(echo.HeaderContentType, ProblemContentType)
		c.Response().WriteHeader(p.Status)
		if c.Request().Method == http.MethodHead {
			return
		}
		if werr := echoJSON(c, p); werr != nil {
			log.Debug("write problem", zap.Error(werr))
		}
	}
}

func echoJSON(c echo.Context, v any) error {
	enc := c.Echo().JSONSerializer
	return enc.Serialize(c, v, "")
}

func slugFor(status int) string {
	switch status {
	case http.StatusNotFound:
		return "not-found"
	case http.StatusMethodNotAllowed:
		return "method-not-allowed"
	case http.StatusRequestEntityTooLarge:
		return "body-too-large"
	case http.StatusRequestHeaderFieldsTooLarge:
		return "headers-too-large"
	default:
		return "http-" + strconv.Itoa(status)
	}
}
