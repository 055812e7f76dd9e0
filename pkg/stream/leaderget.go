package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// GetRequest selects one stored message for LeaderGet: the first at or
// after Seq, or stored at or after StartTime (one of the two), on a
// subject matching NextBySubj.
type GetRequest struct {
	Seq        uint64
	StartTime  time.Time
	NextBySubj string
}

// Stored is what LeaderGet returns of a message: its sequence and when
// the stream stored it.
type Stored struct {
	Seq  uint64
	Time time.Time
}

// LeaderGet asks the stream leader (a JetStream message get, not a direct
// get, which a lagging replica may answer) for the message req selects,
// without its headers or body. found is false when there is none. It
// sends the request itself: nats.go's Stream.GetMsg uses a direct get on
// a stream that allows it, and cannot select by start time.
func LeaderGet(ctx context.Context, nc *nats.Conn, stream string, req GetRequest) (m Stored, found bool, err error) {
	body := map[string]any{"next_by_subj": req.NextBySubj, "no_hdr": true}
	if req.StartTime.IsZero() {
		body["seq"] = req.Seq
	} else {
		body["start_time"] = req.StartTime.UTC()
	}
	data, err := json.Marshal(body)
	if err != nil {
		return m, false, err
	}
	msg, err := nc.RequestWithContext(ctx, jetstream.DefaultAPIPrefix+"STREAM.MSG.GET."+stream, data)
	if err != nil {
		return m, false, err
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error,omitempty"`
		Message *struct {
			Sequence uint64    `json:"seq"`
			Time     time.Time `json:"time"`
		} `json:"message,omitempty"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return m, false, fmt.Errorf("decode the answer: %w", err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return m, false, nil
	case resp.Error != nil:
		return m, false, resp.Error
	case resp.Message == nil:
		return m, false, errors.New("empty answer")
	}
	return Stored{Seq: resp.Message.Sequence, Time: resp.Message.Time}, true, nil
}
