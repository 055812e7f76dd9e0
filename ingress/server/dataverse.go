package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/ingress/dataverse"
	"github.com/likeperson/portalsync/pkg/dvmap"
	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
)

// DataversePath is where a Dataverse service endpoint (webhook) posts its
// RemoteExecutionContext.
const DataversePath = "/webhooks/dataverse"

// DataverseAccepted is the body of a 2xx answer to Dataverse: the events
// the context became (none when Ignored says why it needs none).
type DataverseAccepted struct {
	Events  []Accepted `json:"events"`
	Ignored string     `json:"ignored,omitempty"`
}

// dataverseIntake holds what the Dataverse route needs besides the Handler.
type dataverseIntake struct {
	cfg     dataverse.Config
	keys    *dataverse.Keys
	mapping dvmap.Mapping
}

func newDataverseIntake(cfg dataverse.Config) (*dataverseIntake, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dataverse intake: %w", err)
	}
	keys, err := dataverse.NewKeys(cfg.Keys, cfg.KeyHeader)
	if err != nil {
		return nil, fmt.Errorf("dataverse intake: %w", err)
	}
	m := dvmap.DefaultMapping()
	if cfg.Mapping != nil {
		m = *cfg.Mapping
	}
	return &dataverseIntake{cfg: cfg, keys: keys, mapping: m}, nil
}

// dataverseStatuses keeps Dataverse's retry rule: it retries once, and
// only after 502, 503 or 504. What may succeed later must be a 503 (a 429
// of the rate limit would be final), what never will a 4xx.
func (h *Handler) dataverseStatuses(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := next(c)
		var p *Problem
		if errors.As(err, &p) && p.Status == http.StatusTooManyRequests {
			p.Status = http.StatusServiceUnavailable
		}
		return err
	}
}

// receiveDataverse handles one Dataverse webhook: key, organization, size,
// context, translation, publish of each event. 2xx only after JetStream
// acknowledged every event; a retry publishes the same ids again and so
// stores nothing twice.
func (h *Handler) receiveDataverse(c echo.Context) error {
	dv := h.dataverse
	req := c.Request()
	if id := req.Header.Get(dataverse.HeaderCorrelationID); id != "" && len(id) <= event.MaxIDLength && event.ValidID(id) {
		c.Set(ctxCorrelationID, id)
	}
	if err := dv.keys.Check(req); err != nil {
		c.Set(ctxReason, reasonDataverseKey)
		return newProblem(http.StatusUnauthorized, "invalid-key", "Invalid Dataverse key", err.Error())
	}
	if !dv.cfg.OrganizationMatches(req) {
		c.Set(ctxReason, "dataverse_organization")
		return newProblem(http.StatusForbidden, "wrong-organization", "Wrong Dataverse organization",
			"the x-ms-dynamics-organization header is not the configured environment")
	}
	body, err := h.readBody(c)
	if err != nil {
		return err
	}
	dctx, err := dataverse.Decode(body)
	if err != nil {
		c.Set(ctxReason, "dataverse_not_context")
		return newProblem(http.StatusBadRequest, "not-dataverse-context", "Not a RemoteExecutionContext", err.Error())
	}
	c.Set(ctxEventType, "dataverse:"+dctx.PrimaryEntityName+":"+dctx.MessageName)
	// Dataverse sets the header only when it stripped the body; any value
	// but "false" counts.
	se := strings.TrimSpace(req.Header.Get(dataverse.HeaderMsgSizeExceeded))
	sizeExceeded := se != "" && !strings.EqualFold(se, "false")
	res, err := dataverse.Translate(dctx, dv.mapping, sizeExceeded)
	if err != nil {
		var ue *dataverse.UntranslatableError
		if !errors.As(err, &ue) {
			return err
		}
		return h.untranslatable(c, dctx, ue)
	}
	out := DataverseAccepted{Events: []Accepted{}, Ignored: res.Ignored}
	if res.Ignored != "" {
		c.Set(ctxReason, "dataverse_ignored")
		return c.JSON(http.StatusOK, out)
	}
	status := http.StatusOK
	for _, t := range res.Events {
		c.Set(ctxEventID, t.Event.ID)
		c.Set(ctxMemberID, t.Event.Member.ID)
		if err := t.Event.CheckClock(h.cfg.Now(), h.cfg.Tolerance); err != nil {
			var verr event.ValidationError
			errors.As(err, &verr)
			return h.untranslatable(c, dctx, &dataverse.UntranslatableError{Reason: "occurred-at-in-future", Detail: verr.Error(), Fields: verr})
		}
		ack, err := h.publish(c, t.Event, t.Body, stream.SourceDataverseWebhook)
		if err != nil {
			return err
		}
		if !ack.Duplicate {
			status = http.StatusAccepted
		}
		out.Events = append(out.Events, Accepted{EventID: t.Event.ID, StreamSeq: ack.Sequence, Duplicate: ack.Duplicate})
	}
	return c.JSON(status, out)
}

// untranslatable answers 422 for a context that can never become an event
// as it is, and logs it (ids, never values) so that reconciliation, or an
// operator, can pick the row up: Dataverse does not retry a 4xx.
func (h *Handler) untranslatable(c echo.Context, dctx *dataverse.Context, ue *dataverse.UntranslatableError) error {
	reason := "dataverse_" + strings.ReplaceAll(ue.Reason, "-", "_")
	c.Set(ctxReason, reason)
	h.metrics.dataverseUntranslated.WithLabelValues(ue.Reason).Inc()
	h.log.Warn("dataverse change not translated; left to reconciliation",
		zap.String("reason", ue.Reason),
		zap.String("table", dctx.PrimaryEntityName),
		zap.String("row_id", event.CanonicalID(dctx.PrimaryEntityID)),
		zap.String("message", dctx.MessageName),
		zap.String("operation_id", event.CanonicalID(dctx.OperationID)))
	h.publishRefusal(c, dataverse.Refused(dctx, h.dataverse.mapping, ue), ue.Reason)
	p := newProblem(http.StatusUnprocessableEntity, "dataverse-"+ue.Reason, "Dataverse change not translated",
		ue.Detail+"; it is logged for reconciliation")
	p.Reason = strings.ReplaceAll(ue.Reason, "-", "_")
	p.Errors = ue.Fields
	return p
}

// publishRefusal stores a refused change's record (stream.HeaderRefused)
// on the subject of its member (or, when no member is known, of its row),
// so that the syncer logs it for the organization's admins. The answer
// stays 422 whatever happens here: a record that cannot be stored is
// logged and counted, as is one whose organization the context does not
// name (its row reaches no org admin; Metrics).
func (h *Handler) publishRefusal(c echo.Context, r dataverse.Refusal, reason string) {
	if h.pub == nil {
		return // a handler built without a stream (tests of answers only)
	}
	msg := h.newMsg(cmp.Or(r.MemberID, r.RowID), r.ID, stream.RefusedEventType, stream.SourceDataverseWebhook, []byte(r.Detail))
	msg.Header.Set(stream.HeaderRefused, reason)
	if r.MemberID != "" {
		msg.Header.Set(stream.HeaderMemberID, r.MemberID)
	}
	if r.OrgID != "" {
		msg.Header.Set(stream.HeaderOrgID, r.OrgID)
	} else {
		h.metrics.dataverseRefusalsNoOrg.Inc()
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), h.cfg.PublishTimeout)
	defer cancel()
	if _, err := h.pub.PublishMsg(ctx, msg); err != nil {
		h.metrics.dataverseRefusalsUnpublished.Inc()
		h.log.Warn("refused Dataverse change not recorded for the sync log", zap.String("refusal_id", r.ID), zap.Error(err))
	}
}
