"""Where the gateway keeps what outlives a request (stored responses)."""
