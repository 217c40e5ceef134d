-- When an agent last signed out of the panel: every session issued before is void, on every
-- node (session cookies are stateless; this is what revokes them).
CREATE TABLE agent_sign_outs (
    agent TEXT PRIMARY KEY,
    at    BIGINT NOT NULL -- unix ms
);
