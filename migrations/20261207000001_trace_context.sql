-- OpenTelemetry (issue 18): the W3C traceparent of the alert transition that queued a
-- notification, so its delivery (later, perhaps on another cloud instance) continues the same
-- trace. NULL when traces are not exported. notifications already has row-level security.
ALTER TABLE notifications ADD COLUMN trace_context text
    CHECK (trace_context IS NULL OR length(trace_context) = 55);
