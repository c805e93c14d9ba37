-- Backtests replay LLM answers by prompt hash (`recorded_answer`): index the hash of completed calls.
CREATE INDEX IF NOT EXISTS events_llm_prompt_hash_idx
    ON events ((payload -> 'LlmCallCompleted' ->> 'prompt_hash'))
    WHERE event_type = 'LlmCallCompleted';
