-- "What did this event cause?": agents look up the events their own commands wrote in reply to an event,
-- and `jarvis events trace` can walk forward as well as back.
CREATE INDEX IF NOT EXISTS events_causation_idx ON events ((metadata ->> 'causation_id'));
