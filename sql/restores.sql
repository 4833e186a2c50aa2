-- One row per table restore_table created: where its rows came from and whether
-- restore_validate found them equal to the snapshot. copyback_plan reads it.
CREATE TABLE restores (
    target_oid oid NOT NULL,
    target_table text NOT NULL,
    source_table text NOT NULL,
    snapshot_id text NOT NULL,
    rows bigint NOT NULL,
    restored_at timestamptz NOT NULL DEFAULT now(),
    restored_by name NOT NULL DEFAULT current_user,
    validated_at timestamptz,
    validation_passed boolean,
    -- Set by backstop 0.2 and earlier when the caller chose to trust a manifest its key had not
    -- authenticated (trust_unauthenticated => true). Since 0.3 every manifest a restore uses is
    -- signed by a trusted key, and this is always false: kept for the history of older rows.
    trusted_unauthenticated boolean NOT NULL DEFAULT false
);
CREATE INDEX restores_target ON restores (target_oid, restored_at DESC);
