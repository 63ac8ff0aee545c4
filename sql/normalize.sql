-- Normalization: cumulative energy registers (raw.point_value of 'energy' points) into
-- 15-minute energy per physical meter (energy.meter_interval).
-- Grain: one interval row per meter and UTC quarter hour. Written by jobs.normalize through
-- energy.normalize_ranges; read by the rollups, billing, carbon and reports.
--
-- Method (docs/architecture.md, "Normalization"): consecutive good readings of a point form
-- a pair (t0, v0) -> (t1, v1) whose advance d is v1 - v0, or R + 1 - v0 + v1 after a wrap
-- when the meter has a register maximum R (rollover, 64), or v1 after a restart from zero
-- (reset, 128). The advance is spread linearly over [t0, t1) - which is exactly linear
-- interpolation of the register to the quarter boundaries - scaled by the multiplier of
-- the meter_point link valid at each instant, and summed per quarter. A pair longer than
-- the point's max_gap (default 1 hour) is a gap: its share is flagged estimated (4);
-- otherwise measured (1), plus interpolated (2) when a quarter boundary falls strictly
-- inside a pair. A quarter is written only when pairs cover all of it, so the leading edge
-- waits for the reading after it. Readings flagged 2, 4 or 8 by cleaning are skipped.
-- Over any span of written quarters the energy sum equals the register's net advance,
-- corrected for rollovers and resets, times the multiplier (the conservation invariant).

-- Look-ups of one reading are written ORDER BY ts LIMIT 1, never min()/max() with a
-- filter: on a hypertable the planner turns the latter into an aggregate over every
-- earlier chunk, which grows with the history.
-- A reading normalization may use.
-- (inlined as: quality & 14 = 0 AND value < 'Infinity' AND value > '-Infinity')

-- The time span a meter has data in: its links' readings and its existing intervals.
-- NULL when there is none. Used to bound open-ended ranges (configuration changes).
CREATE FUNCTION energy.meter_data_span(p_meter integer) RETURNS tstzrange
LANGUAGE sql STABLE AS $$
    WITH links AS (
        SELECT greatest(mp.valid_from, d.first_ts) AS lo, least(mp.valid_to, d.last_ts) AS hi
        FROM config.meter_point mp
        CROSS JOIN LATERAL (
            SELECT (SELECT r.ts FROM raw.point_value r WHERE r.point_id = mp.point_id ORDER BY r.ts LIMIT 1) AS first_ts,
                   (SELECT r.ts + interval '1 microsecond' FROM raw.point_value r
                    WHERE r.point_id = mp.point_id ORDER BY r.ts DESC LIMIT 1) AS last_ts
        ) d
        WHERE mp.meter_id = p_meter AND d.first_ts IS NOT NULL
    ), bounds AS (
        SELECT least((SELECT min(lo) FROM links WHERE lo < hi),
                     (SELECT min(ts) FROM energy.meter_interval WHERE meter_id = p_meter)) AS lo,
               greatest((SELECT max(hi) FROM links WHERE lo < hi),
                        (SELECT max(ts) + interval '15 minutes' FROM energy.meter_interval
                         WHERE meter_id = p_meter)) AS hi
    )
    SELECT CASE WHEN lo IS NOT NULL AND hi IS NOT NULL AND lo < hi THEN tstzrange(lo, hi) END FROM bounds
$$;

-- The good readings either side of each (point, lo, hi): the last before lo and the first
-- at or after hi (NULL when there is none). Looked for within two days of all the ranges
-- first (both bounds fixed for the statement, so TimescaleDB probes only those chunks:
-- see energy.normalize_ranges), else beyond them (no per-row time bound: the nearest chunk
-- answers); the ranges lie inside that window, so the two searches are complementary.
-- Arrays in, one row per element out (in order), so the bounds stay per statement.
CREATE FUNCTION energy.good_neighbours(p_point integer[], p_lo timestamptz[], p_hi timestamptz[])
RETURNS TABLE (ord bigint, before_ts timestamptz, after_ts timestamptz)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan AS $fn$
#variable_conflict use_column
DECLARE
    v_near_lo timestamptz := (SELECT min(l) FROM unnest(p_lo) l) - interval '2 days';
    v_near_hi timestamptz := (SELECT max(h) FROM unnest(p_hi) h) + interval '2 days';
BEGIN
    RETURN QUERY
    SELECT u.ord,
           coalesce((SELECT r.ts FROM raw.point_value r
                     WHERE r.point_id = u.point_id AND r.ts < u.lo AND r.ts >= v_near_lo AND r.ts < v_near_hi
                       AND r.quality & 14 = 0 AND r.value < 'Infinity' AND r.value > '-Infinity'
                     ORDER BY r.ts DESC LIMIT 1),
                    (SELECT r.ts FROM raw.point_value r
                     WHERE r.point_id = u.point_id AND r.ts < v_near_lo AND r.quality & 14 = 0
                       AND r.value < 'Infinity' AND r.value > '-Infinity' ORDER BY r.ts DESC LIMIT 1)),
           coalesce((SELECT r.ts FROM raw.point_value r
                     WHERE r.point_id = u.point_id AND r.ts >= u.hi AND r.ts >= v_near_lo AND r.ts < v_near_hi
                       AND r.quality & 14 = 0 AND r.value < 'Infinity' AND r.value > '-Infinity'
                     ORDER BY r.ts LIMIT 1),
                    (SELECT r.ts FROM raw.point_value r
                     WHERE r.point_id = u.point_id AND r.ts >= v_near_hi AND r.quality & 14 = 0
                       AND r.value < 'Infinity' AND r.value > '-Infinity' ORDER BY r.ts LIMIT 1))
    FROM unnest(p_point, p_lo, p_hi) WITH ORDINALITY AS u(point_id, lo, hi, ord);
END
$fn$;

-- Meter work for changed point readings: each (point, start, end) widens to the good
-- readings either side (the pairs that used them), then maps to the physical meters whose
-- links use the point at that time (energy.good_neighbours).
CREATE FUNCTION energy.point_work(p_point integer[], p_start timestamptz[], p_end timestamptz[])
RETURNS TABLE (meter_id integer, range_start timestamptz, range_end timestamptz)
LANGUAGE sql STABLE AS $fn$
    SELECT mp.meter_id, greatest(x.lo, mp.valid_from), least(x.hi, mp.valid_to)
    FROM (
        SELECT u.point_id, coalesce(n.before_ts, u.s) AS lo,
               coalesce(n.after_ts + interval '1 microsecond', u.e) AS hi
        FROM unnest(p_point, p_start, p_end) WITH ORDINALITY AS u(point_id, s, e, ord)
        JOIN energy.good_neighbours(p_point, p_start, p_end) n ON n.ord = u.ord
    ) x
    JOIN config.meter_point mp ON mp.point_id = x.point_id
    JOIN config.meter m ON m.id = mp.meter_id AND m.kind = 'physical'
    WHERE greatest(x.lo, mp.valid_from) < least(x.hi, mp.valid_to)
$fn$;

-- Points feeding physical meters that have readings after their normalization watermark:
-- (point, first new reading, last new reading + 1 microsecond). Points whose watermark is
-- within two days of the newest look only at chunks from there on (a bound fixed for the
-- statement, see normalize_ranges below); a point left further behind searches its whole
-- history.
CREATE FUNCTION energy.new_reading_work()
RETURNS TABLE (point_id integer, range_start timestamptz, range_end timestamptz)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan AS $fn$
#variable_conflict use_column
DECLARE
    v_recent timestamptz := coalesce((SELECT max(normalized_until) FROM ops.point_watermark), 'infinity')
                            - interval '2 days';
BEGIN
    RETURN QUERY
    SELECT p.point_id, n.first_ts, n.last_ts + interval '1 microsecond'
    FROM (SELECT DISTINCT mp.point_id
          FROM config.meter_point mp JOIN config.meter m ON m.id = mp.meter_id AND m.kind = 'physical') p
    LEFT JOIN ops.point_watermark w ON w.point_id = p.point_id
    CROSS JOIN LATERAL (
        SELECT CASE WHEN w.normalized_until >= v_recent
                    THEN (SELECT r.ts FROM raw.point_value r
                          WHERE r.point_id = p.point_id AND r.ts > w.normalized_until AND r.ts >= v_recent
                          ORDER BY r.ts LIMIT 1)
                    ELSE (SELECT r.ts FROM raw.point_value r
                          WHERE r.point_id = p.point_id AND r.ts > coalesce(w.normalized_until, '-infinity')
                          ORDER BY r.ts LIMIT 1) END AS first_ts,
               coalesce((SELECT r.ts FROM raw.point_value r
                         WHERE r.point_id = p.point_id AND r.ts >= v_recent ORDER BY r.ts DESC LIMIT 1),
                        (SELECT r.ts FROM raw.point_value r
                         WHERE r.point_id = p.point_id ORDER BY r.ts DESC LIMIT 1)) AS last_ts
    ) n
    WHERE n.first_ts IS NOT NULL;
END
$fn$;

-- Recompute the intervals of physical meters over (meter, start, end) ranges. Open-ended
-- ranges are bounded by the meter's data; ranges widen to whole quarters and are merged.
-- Inserts new and upserts changed intervals, deletes intervals that no longer exist, logs each meter's
-- rewritten span in ops.dirty_range for the stages downstream, and advances the points'
-- normalized_until. Returns the number of interval rows written or deleted.
--
-- Why three statements: a look-up whose time bound comes from another row (a link's
-- start) makes TimescaleDB test every chunk of raw.point_value on every probe, so its cost
-- grows with the history (about 1 ms per probe at a year of daily chunks, 80 times the
-- cost at 30). A bound that is a variable of this function is known when a statement
-- starts: chunks outside it are dropped once per statement. So the work and its links
-- are decided first, then the readings either side of each link piece are looked up in a
-- window around the work (falling back to the whole history when the window holds none),
-- and the main statement reads only inside the window those readings span.
CREATE FUNCTION energy.normalize_ranges(p_meter integer[], p_start timestamptz[], p_end timestamptz[])
RETURNS bigint
LANGUAGE plpgsql
-- generic plans: bounds stay parameters (see above), planned once per session, not per call
SET plan_cache_mode = force_generic_plan
-- each link piece's quarters are summed from a few hundred rows that arrive in time order:
-- sorting them (already sorted) costs less than a hash table built per piece (8 % of the
-- stage, in a backfill and in an incremental cycle alike)
SET enable_hashagg = off AS $fn$
DECLARE
    w_meter integer[]; w_rs timestamptz[]; w_re timestamptz[];
    l_meter integer[]; l_point integer[]; l_lo timestamptz[]; l_hi timestamptz[];
    l_mult double precision[]; l_rmax double precision[]; l_gap interval[];
    l_single boolean[]; l_low double precision[]; l_high double precision[];
    l_rlo timestamptz[]; l_rhi timestamptz[];
    v_work_lo timestamptz; v_work_hi timestamptz;     -- the work's intervals
    v_read_lo timestamptz; v_read_hi timestamptz;     -- every reading the main statement reads
    v_changed bigint;
BEGIN
    WITH bounded AS (
        SELECT u.meter_id,
               CASE WHEN isfinite(u.s) THEN u.s ELSE greatest(u.s, lower(energy.meter_data_span(u.meter_id))) END AS s,
               CASE WHEN isfinite(u.e) THEN u.e ELSE least(u.e, upper(energy.meter_data_span(u.meter_id))) END AS e
        FROM unnest(p_meter, p_start, p_end) AS u(meter_id, s, e)
        JOIN config.meter m ON m.id = u.meter_id AND m.kind = 'physical'
    ),
    aligned AS (
        SELECT meter_id, time_bucket('15 minutes', s) AS s,
               time_bucket('15 minutes', e - interval '1 microsecond') + interval '15 minutes' AS e
        FROM bounded WHERE s < e
    )
    SELECT array_agg(id ORDER BY id, range_start), array_agg(range_start ORDER BY id, range_start),
           array_agg(range_end ORDER BY id, range_start), min(range_start), max(range_end)
    INTO w_meter, w_rs, w_re, v_work_lo, v_work_hi
    FROM ops.merge_ranges(ARRAY(SELECT meter_id FROM aligned ORDER BY meter_id, s, e),
                          ARRAY(SELECT s FROM aligned ORDER BY meter_id, s, e),
                          ARRAY(SELECT e FROM aligned ORDER BY meter_id, s, e));
    IF w_meter IS NULL THEN
        RETURN 0;
    END IF;

    SELECT array_agg(w.meter_id ORDER BY w.meter_id, w.valid_from), array_agg(w.point_id ORDER BY w.meter_id, w.valid_from),
           array_agg(greatest(w.rs, w.valid_from) ORDER BY w.meter_id, w.valid_from),
           array_agg(least(w.re, w.valid_to) ORDER BY w.meter_id, w.valid_from),
           array_agg(w.multiplier ORDER BY w.meter_id, w.valid_from),
           array_agg(m.register_max::double precision ORDER BY w.meter_id, w.valid_from),
           array_agg(coalesce(pc.max_gap, interval '1 hour') ORDER BY w.meter_id, w.valid_from),
           array_agg(w.pieces = 1 ORDER BY w.meter_id, w.valid_from),
           array_agg(m.hourly_low ORDER BY w.meter_id, w.valid_from),
           array_agg(m.hourly_high ORDER BY w.meter_id, w.valid_from)
    INTO l_meter, l_point, l_lo, l_hi, l_mult, l_rmax, l_gap, l_single, l_low, l_high
    FROM (
        -- the link pieces of each work range, and how many it has
        SELECT w.meter_id, w.rs, w.re, mp.point_id, mp.valid_from, mp.valid_to, mp.multiplier,
               count(*) OVER (PARTITION BY w.meter_id, w.rs) AS pieces
        FROM unnest(w_meter, w_rs, w_re) AS w(meter_id, rs, re)
        JOIN config.meter_point mp ON mp.meter_id = w.meter_id AND mp.valid_from < w.re AND mp.valid_to > w.rs
    ) w
    JOIN config.meter m ON m.id = w.meter_id
    LEFT JOIN config.point_cleaning pc ON pc.point_id = w.point_id;

    -- Each link piece reads its readings plus the good reading either side (the pairs
    -- that cross its edges).
    SELECT array_agg(coalesce(n.before_ts, u.lo) ORDER BY u.ord), array_agg(coalesce(n.after_ts, u.hi) ORDER BY u.ord),
           min(coalesce(n.before_ts, u.lo)), max(coalesce(n.after_ts, u.hi))
    INTO l_rlo, l_rhi, v_read_lo, v_read_hi
    FROM unnest(l_point, l_lo, l_hi) WITH ORDINALITY AS u(point_id, lo, hi, ord)
    JOIN energy.good_neighbours(l_point, l_lo, l_hi) n ON n.ord = u.ord;
    IF l_meter IS NULL THEN      -- no link in the ranges: nothing measured, nothing to keep
        v_read_lo := v_work_lo;
        v_read_hi := v_work_lo;
    END IF;

    WITH work AS MATERIALIZED (
        SELECT * FROM unnest(w_meter, w_rs, w_re) AS w(meter_id, rs, re)
    ),
    bounds AS MATERIALIZED (
        SELECT * FROM unnest(l_meter, l_point, l_lo, l_hi, l_mult, l_rmax, l_gap, l_rlo, l_rhi,
                             l_single, l_low, l_high)
            AS b(meter_id, point_id, lo, hi, multiplier, rmax, max_gap, r_lo, r_hi, single, low, high)
    ),
    -- not materialised: each of its two readers below runs it for its own link pieces
    pieces AS NOT MATERIALIZED (
    -- Per link piece: consecutive good readings (one ordered scan, paired without a
    -- sort), their advance spread over the quarters and summed per quarter while the
    -- piece's few hundred rows are at hand (about 20 % faster than one aggregate over
    -- every piece of the call). A quarter cut by a link's edge is summed with the other
    -- link pieces of its meter in `computed`.
    SELECT bd.meter_id, bd.single, bd.low, bd.high, g.q, g.energy, g.secs, g.flags
    FROM bounds bd
    CROSS JOIN LATERAL (
        WITH spans AS MATERIALIZED (
            SELECT s.t0, s.t1, greatest(s.t0, bd.lo) AS a, least(s.t1, bd.hi) AS b,
                   time_bucket('15 minutes', greatest(s.t0, bd.lo)) AS qa,
                   CASE WHEN s.v1 >= s.v0 THEN s.v1 - s.v0
                        WHEN bd.rmax IS NOT NULL AND s.v0 <= bd.rmax THEN bd.rmax + 1 - s.v0 + s.v1
                        ELSE s.v1 END * bd.multiplier / date_part('epoch', s.t1 - s.t0) AS scale,
                   CASE WHEN s.v1 >= s.v0 THEN 0
                        WHEN bd.rmax IS NOT NULL AND s.v0 <= bd.rmax THEN 64
                        ELSE 128 END
                 | CASE WHEN s.t1 - s.t0 > bd.max_gap THEN 4 ELSE 1 END AS f
            FROM (
                -- Pairs: the piece's readings as two arrays, each unnested beside itself
                -- shifted by one (8 % of a call less than lag() over the scan). The arrays
                -- are built straight from the ordered scan, with nothing in between that
                -- could reorder it, so they are in time order; an ORDER BY inside
                -- array_agg would sort them again.
                SELECT unnest(a.ts[1:a.n - 1]) AS t0, unnest(a.v[1:a.n - 1]) AS v0,
                       unnest(a.ts[2:a.n]) AS t1, unnest(a.v[2:a.n]) AS v1
                FROM (SELECT array_agg(r.ts) AS ts, array_agg(r.value) AS v, count(*)::integer AS n
                      FROM (SELECT r.ts, r.value FROM raw.point_value r
                            WHERE r.point_id = bd.point_id AND r.ts >= bd.r_lo AND r.ts <= bd.r_hi
                              AND r.ts >= v_read_lo AND r.ts <= v_read_hi          -- the call's window (above)
                              AND r.quality & 14 = 0 AND r.value < 'Infinity' AND r.value > '-Infinity'
                            ORDER BY r.ts) r      -- ordered: only the chunks the piece needs are read
                     ) a
            ) s
            WHERE s.t1 > bd.lo AND s.t0 < bd.hi
        )
        -- Each pair's share of a quarter is rounded to a multiple of 2^-30 (about 1e-9 of
        -- the unit): floats on one such grid add exactly while the quarter stays below 2^23
        -- units (8.4 million kWh), so the sum does not depend on the order or grouping the
        -- shares arrive in and a recompute over any range gives bit-identical energy. (The
        -- same exactness through numeric cost a float-to-numeric conversion per share: 15 %
        -- of the stage.)
        SELECT x.q, sum(round(x.secs * x.scale * 1073741824.0) / 1073741824.0) AS energy,
               sum(x.secs) AS secs, bit_or(x.flags) AS flags
        FROM (
            -- Most pairs lie within one quarter (readings every few minutes): no series needed.
            SELECT p.qa AS q, date_part('epoch', p.b - p.a) AS secs, p.scale,
                   p.f | (CASE WHEN p.t0 < p.qa OR p.t1 > p.qa + interval '15 minutes' THEN 2 ELSE 0 END) AS flags
            FROM spans p
            WHERE p.b <= p.qa + interval '15 minutes'
            UNION ALL
            SELECT q.q, date_part('epoch', least(p.b, q.q + interval '15 minutes') - greatest(p.a, q.q)), p.scale,
                   p.f | (CASE WHEN p.t0 < q.q OR p.t1 > q.q + interval '15 minutes' THEN 2 ELSE 0 END)
            FROM spans p
            CROSS JOIN LATERAL generate_series(p.qa, p.b - interval '1 microsecond', interval '15 minutes') AS q(q)
            WHERE p.b > p.qa + interval '15 minutes'
        ) x
        GROUP BY x.q
    ) g
),
-- Quarters wholly covered by pairs, with their flags. Read once, by `diff`: not materialised.
computed AS NOT MATERIALIZED (
    SELECT i.meter_id, i.ts, i.energy,
           (CASE WHEN i.q & 4 <> 0 THEN i.q & ~1 ELSE i.q END)
         | (CASE WHEN i.energy * 4 < i.low OR i.energy * 4 > i.high THEN 32 ELSE 0 END) AS quality
    FROM (
        -- The only link piece of its work range (nearly always): its quarters are the
        -- meter's, no aggregate across pieces needed (8 % of a call).
        SELECT meter_id, q AS ts, energy, flags AS q, low, high
        FROM pieces
        WHERE single AND secs >= 899.999
        UNION ALL
        -- A link changed inside the range: the quarter cut by the change is summed from
        -- both pieces.
        SELECT meter_id, q, sum(energy), bit_or(flags), min(low), min(high)
        FROM pieces
        WHERE NOT single
        GROUP BY meter_id, q
        HAVING sum(secs) >= 899.999
    ) i
),
existing AS MATERIALIZED (
    SELECT mi.meter_id, mi.ts, mi.energy, mi.quality
    FROM work w
    CROSS JOIN LATERAL (
        -- ordered, so only the chunks inside the range are visited
        SELECT mi.meter_id, mi.ts, mi.energy, mi.quality FROM energy.meter_interval mi
        WHERE mi.meter_id = w.meter_id AND mi.ts >= w.rs AND mi.ts < w.re
          AND mi.ts >= v_work_lo AND mi.ts < v_work_hi
        ORDER BY mi.ts
    ) mi
),
diff AS MATERIALIZED (
    SELECT coalesce(c.meter_id, e.meter_id) AS meter_id, coalesce(c.ts, e.ts) AS ts,
           c.energy, c.quality, e.meter_id IS NOT NULL AS present, c.meter_id IS NOT NULL AS wanted
    FROM computed c FULL JOIN existing e ON e.meter_id = c.meter_id AND e.ts = c.ts
    WHERE c.meter_id IS NULL OR e.meter_id IS NULL
       OR (e.energy, e.quality) IS DISTINCT FROM (c.energy, c.quality)
),
-- New intervals: a plain INSERT is safe (the stage's advisory lock makes this the only
-- writer of physical meters' intervals) and twice as fast as ON CONFLICT on a hypertable.
inserted AS (
    INSERT INTO energy.meter_interval (meter_id, ts, energy, quality)
    SELECT meter_id, ts, energy, quality FROM diff WHERE wanted AND NOT present
    ORDER BY meter_id, ts
),
upserted AS (
    INSERT INTO energy.meter_interval AS mi (meter_id, ts, energy, quality)
    SELECT meter_id, ts, energy, quality FROM diff WHERE wanted AND present
    ORDER BY meter_id, ts
    ON CONFLICT (meter_id, ts) DO UPDATE SET energy = EXCLUDED.energy, quality = EXCLUDED.quality
        WHERE (mi.energy, mi.quality) IS DISTINCT FROM (EXCLUDED.energy, EXCLUDED.quality)
),
removed AS (
    DELETE FROM energy.meter_interval mi
    USING diff d
    WHERE NOT d.wanted AND mi.meter_id = d.meter_id AND mi.ts = d.ts
),
changed AS (
    -- exactly the rows the three statements above write (diff holds only rows that differ)
    SELECT meter_id, ts FROM diff
),
logged AS (
    INSERT INTO ops.dirty_range (meter_id, range_start, range_end, reason)
    SELECT meter_id, min(ts), max(ts) + interval '15 minutes', 'normalize: intervals rewritten'
    FROM changed GROUP BY meter_id
    RETURNING 1
),
marks AS (
    -- Advance normalized_until when the range reaches back to it (no unprocessed gap).
    INSERT INTO ops.point_watermark AS pw (point_id, normalized_until)
    SELECT x.point_id, max(x.last_ts)
    FROM (
        SELECT l.point_id, l.lo,
               coalesce((SELECT r.ts FROM raw.point_value r
                         WHERE r.point_id = l.point_id AND r.ts < l.hi AND r.ts >= v_read_lo AND r.ts <= v_read_hi
                         ORDER BY r.ts DESC LIMIT 1),
                        (SELECT r.ts FROM raw.point_value r WHERE r.point_id = l.point_id AND r.ts < v_read_lo
                         ORDER BY r.ts DESC LIMIT 1)) AS last_ts
        FROM bounds l
    ) x
    LEFT JOIN ops.point_watermark old ON old.point_id = x.point_id
    WHERE x.last_ts IS NOT NULL
      AND CASE WHEN old.normalized_until >= v_read_lo
               THEN NOT EXISTS (SELECT FROM raw.point_value r
                                WHERE r.point_id = x.point_id AND r.ts > old.normalized_until
                                  AND r.ts < x.lo AND r.ts >= v_read_lo AND r.ts <= v_read_hi)
               ELSE (SELECT r.ts FROM raw.point_value r
                     WHERE r.point_id = x.point_id
                       AND r.ts > coalesce(old.normalized_until, '-infinity') AND r.ts < x.lo
                     ORDER BY r.ts LIMIT 1) IS NULL END
    GROUP BY x.point_id
    ORDER BY x.point_id   -- one lock order for every writer of these rows
    ON CONFLICT (point_id) DO UPDATE SET normalized_until = EXCLUDED.normalized_until
        WHERE EXCLUDED.normalized_until > pw.normalized_until
    RETURNING 1
)
    SELECT count(*) INTO v_changed FROM changed;
    RETURN v_changed;
END
$fn$;

-- migrate:down
DROP FUNCTION IF EXISTS energy.normalize_ranges(integer[], timestamptz[], timestamptz[]);
DROP FUNCTION IF EXISTS energy.new_reading_work();
DROP FUNCTION IF EXISTS energy.point_work(integer[], timestamptz[], timestamptz[]);
DROP FUNCTION IF EXISTS energy.good_neighbours(integer[], timestamptz[], timestamptz[]);
DROP FUNCTION IF EXISTS energy.meter_data_span(integer);
