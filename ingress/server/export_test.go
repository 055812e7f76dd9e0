package server

// SetBatchAckFirst makes atomic batches wait for the first message's
// acknowledgement (jetstreamext's default) or not, for the benchmark that
// compares the two; it returns the function that restores the setting.
func SetBatchAckFirst(on bool) (restore func()) {
	old := batchFlowControl
	batchFlowControl.AckFirst = on
	return func() { batchFlowControl = old }
}
