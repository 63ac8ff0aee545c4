-- Cleaning of raw readings: quality bits, the rule behind every flag, per-point thresholds
-- and the set function that applies the rules.
-- Grain: one flag row per reading and rule (raw.clean_flag); one settings row per point
-- that departs from the defaults (config.point_cleaning).
-- Written by jobs.clean (flags, raw.point_value.quality bits 2-16) and by users (thresholds);
-- read by jobs.normalize (ignores readings flagged 2, 4 or 8), reports and people asking
-- "why was this reading not used?". Cleaning never deletes a reading.

-- The raw.point_value.quality bits, named. Bit 1 is set by the writer at ingest.
CREATE TABLE raw.quality_flag (
    bit         integer PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL
);
INSERT INTO raw.quality_flag VALUES
    (1,  'out_of_limits',       'outside the point''s low/high limits (set by the writer, reading kept and used)'),
    (2,  'non_finite',          'NaN or infinite value; ignored. Duplicates cannot be stored: the unique (point_id, ts) index refuses them and the writer counts them'),
    (4,  'spike',               'cumulative register: a single reading above both neighbours that the register falls back from; ignored by normalization'),
    (8,  'recovering_decrease', 'cumulative register: below the previous level, which the register regains within the next 3 readings; ignored by normalization'),
    (16, 'stuck',               'analog point: exactly the same value for longer than the point''s stuck_after threshold');

CREATE FUNCTION raw.quality_names(q integer) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(name ORDER BY bit), '{}') FROM raw.quality_flag WHERE q & bit <> 0
$$;

-- Why a reading was flagged: one row per reading and rule, with the evidence.
CREATE TABLE raw.clean_flag (
    point_id   integer     NOT NULL,
    ts         timestamptz NOT NULL,
    rule       text        NOT NULL REFERENCES raw.quality_flag (name),
    detail     text        NOT NULL,
    flagged_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (point_id, ts, rule)
);

-- Per-point thresholds; a point without a row uses the defaults shown here.
CREATE TABLE config.point_cleaning (
    point_id        integer  PRIMARY KEY REFERENCES config.point (id) ON DELETE CASCADE,
    check_registers boolean  NOT NULL DEFAULT true,               -- spike / recovering-decrease rules on energy points
    stuck_after     interval DEFAULT interval '6 hours'           -- analog points; NULL: never flag stuck
                    CHECK (stuck_after IS NULL OR stuck_after > interval '0'),
    max_gap         interval NOT NULL DEFAULT interval '1 hour'   -- normalization: readings further apart are a gap (estimated)
                    CHECK (max_gap > interval '0')
);

-- Clean keeps its own watermark beside normalization's.
ALTER TABLE ops.point_watermark ADD COLUMN cleaned_until timestamptz;

-- Union of overlapping (id, start, end) ranges per id: one non-overlapping set of ranges.
CREATE FUNCTION ops.merge_ranges(p_id integer[], p_start timestamptz[], p_end timestamptz[])
RETURNS TABLE (id integer, range_start timestamptz, range_end timestamptz)
LANGUAGE sql IMMUTABLE AS $$
    SELECT id, min(s), max(e)
    FROM (
        SELECT id, s, e, sum(brk) OVER (PARTITION BY id ORDER BY s, e) AS grp
        FROM (
            SELECT id, s, e,
                   CASE WHEN s <= max(e) OVER (PARTITION BY id ORDER BY s, e
                                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                        THEN 0 ELSE 1 END AS brk
            FROM unnest(p_id, p_start, p_end) AS u(id, s, e)
            WHERE id IS NOT NULL AND s < e
        ) a
    ) b
    GROUP BY id, grp
$$;

-- A reading x between prev and next on a cumulative register is a spike when it is above
-- both and the register falls back to a level consistent with prev. NULLs (missing or
-- non-finite neighbours) make it false. Inlined by the planner (immutable, one expression).
CREATE FUNCTION raw.is_spike(x double precision, prev double precision, next double precision)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(x > next AND next >= prev AND x > prev, false)
$$;

-- The 4th reading before each start and the 4th at or after each end (any quality; NULL
-- when there are fewer than 4, or the end is infinite): the context the cleaning rules
-- need either side of a range. A bound inside [p_near_lo, p_near_hi) looks within that
-- window first (both bounds fixed for the statement, so TimescaleDB probes only those
-- chunks: see energy.normalize_ranges); when fewer than 4 readings are there, the 4
-- nearest beyond it join them (no per-row time bound: chunks are probed nearest first).
-- A bound outside the window searches the whole history. Arrays in, one row per element
-- out (in order), so the window stays fixed per statement.
CREATE FUNCTION raw.fourth_readings(p_point integer[], p_start timestamptz[], p_end timestamptz[],
                                    p_near_lo timestamptz, p_near_hi timestamptz)
RETURNS TABLE (ord bigint, before_ts timestamptz, after_ts timestamptz)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT u.ord,
           CASE WHEN u.s >= p_near_lo AND u.s < p_near_hi THEN coalesce(
               (SELECT min(z.ts) FROM (SELECT r.ts FROM raw.point_value r
                                       WHERE r.point_id = u.point_id AND r.ts < u.s
                                         AND r.ts >= p_near_lo AND r.ts < p_near_hi ORDER BY r.ts DESC LIMIT 4) z
                HAVING count(*) = 4),
               (SELECT z.ts FROM ((SELECT r.ts FROM raw.point_value r
                                   WHERE r.point_id = u.point_id AND r.ts < u.s
                                     AND r.ts >= p_near_lo AND r.ts < p_near_hi ORDER BY r.ts DESC LIMIT 4)
                                  UNION ALL
                                  (SELECT r.ts FROM raw.point_value r
                                   WHERE r.point_id = u.point_id AND r.ts < p_near_lo ORDER BY r.ts DESC LIMIT 4)) z
                ORDER BY z.ts DESC OFFSET 3 LIMIT 1))
           ELSE (SELECT r.ts FROM raw.point_value r WHERE r.point_id = u.point_id AND r.ts < u.s
                 ORDER BY r.ts DESC OFFSET 3 LIMIT 1) END,
           CASE WHEN u.e = 'infinity' THEN NULL
                WHEN u.e >= p_near_lo AND u.e < p_near_hi THEN coalesce(
               (SELECT max(z.ts) FROM (SELECT r.ts FROM raw.point_value r
                                       WHERE r.point_id = u.point_id AND r.ts >= u.e
                                         AND r.ts >= p_near_lo AND r.ts < p_near_hi ORDER BY r.ts LIMIT 4) z
                HAVING count(*) = 4),
               (SELECT z.ts FROM ((SELECT r.ts FROM raw.point_value r
                                   WHERE r.point_id = u.point_id AND r.ts >= u.e
                                     AND r.ts >= p_near_lo AND r.ts < p_near_hi ORDER BY r.ts LIMIT 4)
                                  UNION ALL
                                  (SELECT r.ts FROM raw.point_value r
                                   WHERE r.point_id = u.point_id AND r.ts >= p_near_hi ORDER BY r.ts LIMIT 4)) z
                ORDER BY z.ts OFFSET 3 LIMIT 1))
           ELSE (SELECT r.ts FROM raw.point_value r WHERE r.point_id = u.point_id AND r.ts >= u.e
                 ORDER BY r.ts OFFSET 3 LIMIT 1) END
    FROM unnest(p_point, p_start, p_end) WITH ORDINALITY AS u(point_id, s, e, ord);
END
$fn$;

-- Apply the cleaning rules to the readings of each (point, start, end) range, widened by 4
-- readings each way (a reading's verdict depends on the 4 readings either side of it) and evaluated
-- with 4 more readings of context, so a reading's flags do not depend on how the work was
-- cut. Rules, on finite readings in time order:
--   spike (4):   energy point, v > next, next >= prev, v > prev.
--   recovering decrease (8): energy point, not a spike: v below the highest of the 3
--                previous readings and one of the next 3 regains that level (spikes left out).
--   stuck (16):  analog point, value unchanged since a reading more than stuck_after ago
--                (looks back at most stuck_after + 1 day).
--   non-finite (2): NaN / ±Infinity.
-- Only readings whose bits change are updated; raw.clean_flag is brought in line; changes to
-- readings normalization has already consumed are logged as point dirty ranges.
-- Returns the number of readings whose flags changed.
CREATE FUNCTION raw.clean_ranges(p_point integer[], p_start timestamptz[], p_end timestamptz[])
RETURNS bigint
LANGUAGE plpgsql
-- generic plans: bounds stay parameters (see above), planned once per session, not per call
SET plan_cache_mode = force_generic_plan AS $fn$
-- In steps, for the reason given at energy.normalize_ranges (sql/normalize.sql):
-- look-ups bounded by a variable of the function skip the chunks outside the work once
-- per statement; bounded by another row's value they test every chunk on every probe.
DECLARE
    q_point integer[]; q_start timestamptz[]; q_end timestamptz[];
    w_point integer[]; w_start timestamptz[]; w_end timestamptz[];
    c_point integer[]; c_start timestamptz[]; c_end timestamptz[]; c_type text[];
    c_check boolean[]; c_stuck interval[]; c_lo timestamptz[]; c_hi timestamptz[];
    v_near_lo timestamptz; v_near_hi timestamptz;     -- where context readings are looked for first
    v_read_lo timestamptz; v_read_hi timestamptz;     -- every reading the rules read
    v_changed bigint;
BEGIN
    SELECT array_agg(m.id ORDER BY m.id, m.range_start), array_agg(m.range_start ORDER BY m.id, m.range_start),
           array_agg(m.range_end ORDER BY m.id, m.range_start),
           min(m.range_start) - interval '2 days',
           coalesce(max(m.range_end) FILTER (WHERE isfinite(m.range_end)), max(m.range_start)) + interval '2 days'
    INTO q_point, q_start, q_end, v_near_lo, v_near_hi
    FROM ops.merge_ranges(p_point, p_start, p_end) m
    JOIN config.point p ON p.id = m.id;
    IF q_point IS NULL THEN
        RETURN 0;
    END IF;

    -- Widen by 4 readings each way and merge again; then the 4 readings of context beyond
    -- that (raw.fourth_readings: within two days of the work first).
    SELECT array_agg(coalesce(n.before_ts, '-infinity') ORDER BY n.ord),
           array_agg(coalesce(n.after_ts + interval '1 microsecond', 'infinity') ORDER BY n.ord)
    INTO w_start, w_end
    FROM raw.fourth_readings(q_point, q_start, q_end, v_near_lo, v_near_hi) n;
    SELECT array_agg(m.id ORDER BY m.id, m.range_start), array_agg(m.range_start ORDER BY m.id, m.range_start),
           array_agg(m.range_end ORDER BY m.id, m.range_start)
    INTO w_point, w_start, w_end
    FROM ops.merge_ranges(q_point, w_start, w_end) m;

    SELECT array_agg(w.point_id ORDER BY w.ord), array_agg(w.s ORDER BY w.ord), array_agg(w.e ORDER BY w.ord),
           array_agg(p.object_type ORDER BY w.ord),
           array_agg(coalesce(pc.check_registers, true) ORDER BY w.ord),
           array_agg(CASE WHEN pc.point_id IS NULL THEN interval '6 hours' ELSE pc.stuck_after END ORDER BY w.ord),
           -- fewer than 4 readings before: from the first
           array_agg(coalesce(n.before_ts, (SELECT r.ts FROM raw.point_value r WHERE r.point_id = w.point_id
                                            ORDER BY r.ts LIMIT 1)) ORDER BY w.ord),
           array_agg(coalesce(n.after_ts, 'infinity') ORDER BY w.ord)
    INTO c_point, c_start, c_end, c_type, c_check, c_stuck, c_lo, c_hi
    FROM unnest(w_point, w_start, w_end) WITH ORDINALITY AS w(point_id, s, e, ord)
    JOIN raw.fourth_readings(w_point, w_start, w_end, v_near_lo, v_near_hi) n ON n.ord = w.ord
    JOIN config.point p ON p.id = w.point_id
    LEFT JOIN config.point_cleaning pc ON pc.point_id = w.point_id;

    SELECT min(CASE WHEN c.object_type = 'analog' AND c.stuck_after IS NOT NULL
                    THEN least(c.ctx_lo, c.range_start - c.stuck_after - interval '1 day')
                    ELSE c.ctx_lo END),
           max(c.ctx_hi)
    INTO v_read_lo, v_read_hi
    FROM unnest(c_start, c_type, c_stuck, c_lo, c_hi) AS c(range_start, object_type, stuck_after, ctx_lo, ctx_hi);

    WITH ctx AS MATERIALIZED (
        SELECT * FROM unnest(c_point, c_start, c_end, c_type, c_check, c_stuck, c_lo, c_hi)
            AS c(point_id, range_start, range_end, object_type, check_registers, stuck_after, ctx_lo, ctx_hi)
    ),
    verdict AS (
    -- Window passes per range, over one ordered index scan of its readings (a global
    -- sort of all ranges' readings cost more than the scans). Energy (and digital)
    -- points: the 4 readings either side of each reading, which is all the spike and
    -- recovering-decrease rules need (a neighbour's spike verdict is an expression over
    -- the same values). Analog points: when the value last changed (stuck). Each kind
    -- gets only its own windows (a one-time filter on the point's kind picks the
    -- branch): one pass of eight lags and leads, or two of one lag and a running max.
    -- Non-finite values become NULL so they never act as neighbours.
    SELECT s.point_id, s.ts, s.quality,
           (CASE WHEN s.v IS NULL THEN 2 ELSE 0 END)
         | (CASE WHEN s.spike THEN 4 ELSE 0 END)
         | (CASE WHEN s.dip THEN 8 ELSE 0 END)
         | (CASE WHEN s.stuck THEN 16 ELSE 0 END) AS bits,
           CASE WHEN s.v IS NULL OR s.spike OR s.dip OR s.stuck OR s.quality & 1 <> 0 THEN
               nullif(jsonb_strip_nulls(jsonb_build_object(
                   'non_finite', CASE WHEN s.v IS NULL THEN format('value %s is not a finite number', s.value) END,
                   'spike', CASE WHEN s.spike THEN format('%s above both neighbours %s and %s', s.v, s.p1, s.n1) END,
                   'recovering_decrease', CASE WHEN s.dip THEN format('%s below previous level %s, regained %s within 3 readings', s.v, s.prevmax, s.nextmax) END,
                   'stuck', CASE WHEN s.stuck THEN format('unchanged at %s since %s (longer than %s)', s.v, s.run_start, s.stuck_after) END,
                   'out_of_limits', CASE WHEN s.quality & 1 <> 0 THEN format('%s outside the point limits', s.value) END
               )), '{}'::jsonb)
           END AS detail
    FROM (
        SELECT k.*,
               coalesce(k.registers AND NOT k.spike AND k.v < k.prevmax AND k.nextmax >= k.prevmax, false) AS dip,
               coalesce(k.object_type = 'analog' AND k.ts - k.run_start > k.stuck_after, false) AS stuck
        FROM (
            SELECT c.point_id, c.range_start, c.range_end, c.object_type, c.stuck_after, c.registers,
                   r.ts, r.value, r.quality, r.v, r.p1, r.n1,
                   c.registers AND raw.is_spike(r.v, r.p1, r.n1) AS spike,
                   greatest(CASE WHEN NOT raw.is_spike(r.p1, r.p2, r.v)  THEN r.p1 END,
                            CASE WHEN NOT raw.is_spike(r.p2, r.p3, r.p1) THEN r.p2 END,
                            CASE WHEN NOT raw.is_spike(r.p3, r.p4, r.p2) THEN r.p3 END) AS prevmax,
                   greatest(CASE WHEN NOT raw.is_spike(r.n1, r.v, r.n2)  THEN r.n1 END,
                            CASE WHEN NOT raw.is_spike(r.n2, r.n1, r.n3) THEN r.n2 END,
                            CASE WHEN NOT raw.is_spike(r.n3, r.n2, r.n4) THEN r.n3 END) AS nextmax,
                   r.run_start
            FROM (
                SELECT c.*, c.object_type = 'energy' AND c.check_registers AS registers
                FROM ctx c
            ) c
            CROSS JOIN LATERAL (
                -- Steady: every reading of the range and its context finite and unflagged
                -- and, on a register, none below the one before. No rule can flag such a
                -- range (a spike or dip needs a fall; the stuck rule is for analog points),
                -- so the eight-neighbour pass below is skipped for it. One lag, and the
                -- scan stops at the first reading that is not steady: 40 % of a call on
                -- steady ranges, 10 % more when every range has an anomaly.
                SELECT c.object_type <> 'analog' AND NOT EXISTS (
                    SELECT FROM (
                        SELECT x.v, x.quality,
                               lag(x.v) OVER (ORDER BY x.ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev
                        FROM (
                            SELECT x.ts, x.quality,
                                   CASE WHEN x.value < 'Infinity' AND x.value > '-Infinity' THEN x.value END AS v
                            FROM raw.point_value x
                            WHERE c.object_type <> 'analog'
                              AND x.point_id = c.point_id AND x.ts >= c.ctx_lo AND x.ts <= c.ctx_hi
                              AND x.ts >= v_read_lo AND x.ts <= v_read_hi          -- the call's window
                            ORDER BY x.ts
                        ) x
                    ) y
                    WHERE NOT coalesce(y.v IS NOT NULL AND y.quality & 31 = 0
                                       AND (NOT c.registers OR y.prev IS NULL OR y.v >= y.prev), false)
                ) AS steady
            ) st
            CROSS JOIN LATERAL (
                -- One ordered index scan per range with its windows: no sort across ranges.
                -- Energy and digital points: the 4 readings either side of each reading.
                SELECT x.ts, x.value, x.quality, x.v,
                       lag(x.v, 1) OVER o AS p1, lag(x.v, 2) OVER o AS p2,
                       lag(x.v, 3) OVER o AS p3, lag(x.v, 4) OVER o AS p4,
                       lead(x.v, 1) OVER o AS n1, lead(x.v, 2) OVER o AS n2,
                       lead(x.v, 3) OVER o AS n3, lead(x.v, 4) OVER o AS n4,
                       NULL::timestamptz AS run_start
                FROM (
                    SELECT x.ts, x.value, x.quality,
                           CASE WHEN x.value < 'Infinity' AND x.value > '-Infinity' THEN x.value END AS v
                    FROM raw.point_value x
                    WHERE c.object_type <> 'analog' AND NOT st.steady
                      AND x.point_id = c.point_id AND x.ts >= c.ctx_lo AND x.ts <= c.ctx_hi
                      AND x.ts >= v_read_lo AND x.ts <= v_read_hi          -- the call's window
                    ORDER BY x.ts
                ) x
                -- lag()/lead() read the partition, not the frame; a ROWS frame spares the
                -- window its search for peers of every row (10 % of the call)
                WINDOW o AS (ORDER BY x.ts ROWS BETWEEN 4 PRECEDING AND 4 FOLLOWING)
                UNION ALL
                -- Analog points: when the value last changed.
                SELECT y.ts, y.value, y.quality, y.v, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                       max(CASE WHEN y.changed THEN y.ts END) OVER (ORDER BY y.ts ROWS UNBOUNDED PRECEDING)
                FROM (
                    SELECT x.ts, x.value, x.quality, x.v, x.v IS DISTINCT FROM lag(x.v) OVER (ORDER BY x.ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS changed
                    FROM (
                        SELECT x.ts, x.value, x.quality,
                               CASE WHEN x.value < 'Infinity' AND x.value > '-Infinity' THEN x.value END AS v
                        FROM raw.point_value x
                        WHERE c.object_type = 'analog'
                          AND x.point_id = c.point_id
                          AND x.ts >= CASE WHEN c.stuck_after IS NOT NULL
                                           THEN least(c.ctx_lo, c.range_start - c.stuck_after - interval '1 day')
                                           ELSE c.ctx_lo END
                          AND x.ts <= c.ctx_hi
                          AND x.ts >= v_read_lo AND x.ts <= v_read_hi      -- the call's window
                        ORDER BY x.ts
                    ) x
                ) y
            ) r
            -- A register rising steadily through the 4 readings either side, unflagged so
            -- far, can have no flag: leave such readings out before the rules run.
            WHERE r.ts >= c.range_start AND r.ts < c.range_end
              AND NOT coalesce(c.registers AND r.quality & 31 = 0
                               AND r.p4 <= r.p3 AND r.p3 <= r.p2 AND r.p2 <= r.p1 AND r.p1 <= r.v
                               AND r.v <= r.n1 AND r.n1 <= r.n2 AND r.n2 <= r.n3 AND r.n3 <= r.n4, false)
        ) k
        WHERE k.ts >= k.range_start AND k.ts < k.range_end
    ) s
    WHERE s.v IS NULL OR s.spike OR s.dip OR s.stuck OR s.quality & 31 <> 0
),
updated AS (
    UPDATE raw.point_value r
    SET quality = (r.quality & ~30) | v.bits
    FROM verdict v
    WHERE r.point_id = v.point_id AND r.ts = v.ts AND (r.quality & 30) <> v.bits
      AND r.ts >= v_read_lo AND r.ts <= v_read_hi
    RETURNING r.point_id, r.ts
),
wanted AS (
    SELECT v.point_id, v.ts, e.key AS rule, e.value AS detail
    FROM verdict v CROSS JOIN LATERAL jsonb_each_text(v.detail) e
),
flags_removed AS (
    DELETE FROM raw.clean_flag f
    USING ctx c
    WHERE f.point_id = c.point_id AND f.ts >= c.range_start AND f.ts < c.range_end
      AND NOT EXISTS (SELECT 1 FROM wanted w WHERE w.point_id = f.point_id AND w.ts = f.ts AND w.rule = f.rule)
    RETURNING 1
),
flags_added AS (
    INSERT INTO raw.clean_flag (point_id, ts, rule, detail)
    SELECT point_id, ts, rule, detail FROM wanted
    ON CONFLICT (point_id, ts, rule) DO UPDATE SET detail = EXCLUDED.detail, flagged_at = now()
        WHERE raw.clean_flag.detail IS DISTINCT FROM EXCLUDED.detail
    RETURNING 1
),
dirty AS (
    INSERT INTO ops.dirty_range (point_id, range_start, range_end, reason)
    SELECT u.point_id, min(u.ts), max(u.ts) + interval '1 microsecond', 'clean: flags changed'
    FROM updated u JOIN ops.point_watermark w USING (point_id)
    WHERE u.ts <= w.normalized_until
    GROUP BY u.point_id
    RETURNING 1
),
marks AS (
    -- Advance cleaned_until when the cleaned range reaches back to it (no uncleaned gap).
    INSERT INTO ops.point_watermark AS pw (point_id, normalized_until, cleaned_until)
    SELECT DISTINCT ON (c.point_id) c.point_id, '-infinity'::timestamptz, c.last_ts
    FROM (
        SELECT c.point_id, c.range_start,
               coalesce((SELECT r.ts FROM raw.point_value r
                         WHERE r.point_id = c.point_id AND r.ts < c.range_end AND r.ts >= v_read_lo
                           AND r.ts <= v_read_hi
                         ORDER BY r.ts DESC LIMIT 1),
                        (SELECT r.ts FROM raw.point_value r
                         WHERE r.point_id = c.point_id AND r.ts < v_read_lo ORDER BY r.ts DESC LIMIT 1)) AS last_ts
        FROM ctx c
    ) c
    LEFT JOIN ops.point_watermark old ON old.point_id = c.point_id
    WHERE c.last_ts IS NOT NULL
      AND CASE WHEN old.cleaned_until >= v_read_lo
               THEN NOT EXISTS (SELECT 1 FROM raw.point_value r
                                WHERE r.point_id = c.point_id AND r.ts > old.cleaned_until
                                  AND r.ts < c.range_start AND r.ts >= v_read_lo AND r.ts <= v_read_hi)
               ELSE NOT EXISTS (SELECT 1 FROM raw.point_value r
                                WHERE r.point_id = c.point_id
                                  AND r.ts > coalesce(old.cleaned_until, '-infinity') AND r.ts < c.range_start) END
    ORDER BY c.point_id, c.last_ts DESC
    ON CONFLICT (point_id) DO UPDATE
        SET cleaned_until = greatest(pw.cleaned_until, EXCLUDED.cleaned_until)
        WHERE pw.cleaned_until IS DISTINCT FROM greatest(pw.cleaned_until, EXCLUDED.cleaned_until)
    RETURNING 1
)
    SELECT count(*) INTO v_changed FROM updated;
    RETURN v_changed;
END
$fn$;

-- migrate:down
DROP FUNCTION IF EXISTS raw.clean_ranges(integer[], timestamptz[], timestamptz[]);
DROP FUNCTION IF EXISTS raw.fourth_readings(integer[], timestamptz[], timestamptz[], timestamptz, timestamptz);
DROP FUNCTION IF EXISTS raw.is_spike(double precision, double precision, double precision);
DROP FUNCTION IF EXISTS ops.merge_ranges(integer[], timestamptz[], timestamptz[]);
ALTER TABLE ops.point_watermark DROP COLUMN IF EXISTS cleaned_until;
DROP TABLE IF EXISTS config.point_cleaning;
DROP TABLE IF EXISTS raw.clean_flag;
DROP FUNCTION IF EXISTS raw.quality_names(integer);
DROP TABLE IF EXISTS raw.quality_flag;
