-- PSA tickets stay current (issue 19): besides `open` and `close`, a webhook channel that heard of
-- an alert's opening hears `update` when someone acknowledges or comments on it, or when it
-- repeats. Updates are not unique per alert and channel like the other events; at most one waits
-- at a time, and later changes join it (`changes`): it carries the alert as it is when delivered,
-- so nothing is lost by merging them.
ALTER TABLE notifications
    ADD COLUMN changes text[],
    DROP CONSTRAINT notifications_event_check,
    ADD CONSTRAINT notifications_event_check
        CHECK (event IN ('open', 'close', 'notice', 'reminder', 'digest', 'update'));
DROP INDEX notifications_once;
CREATE UNIQUE INDEX notifications_once ON notifications (alert_id, channel_id, event)
    WHERE event NOT IN ('reminder', 'update');
CREATE UNIQUE INDEX notifications_one_pending_update ON notifications (alert_id, channel_id)
    WHERE event = 'update' AND status = 'pending';
