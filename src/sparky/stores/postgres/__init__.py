"""The PostgreSQL store (pgvector; Supabase-compatible): ``store`` connects, migrates, writes and locks,
``search`` answers search queries inside the database, ``schema`` holds the migrations, ``connection`` the
one connection and the translation of driver errors into store errors."""

from .store import PostgresStore

__all__ = ["PostgresStore"]
