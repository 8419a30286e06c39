"""Statistics stage: dijet m_jj fits, sliding-window bump hunt, pyhf limits."""
