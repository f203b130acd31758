"""Provider adapters: one folder per provider, each implementing ``core.interfaces.Provider``."""
