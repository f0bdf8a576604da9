"""Genome helpers: stable hash, compact hex form, and the repair that keeps every
searched layer alive (no layer with all its weight channels pruned)."""

from __future__ import annotations

import hashlib

import numpy as np

from hwmodels import LayerTable

__all__ = ["genome_hash", "genome_to_hex", "genome_from_hex", "repair_all_pruned"]


def genome_hash(genome: np.ndarray) -> str:
    """Stable hash of one genome row (int8 bytes)."""
    return hashlib.sha1(np.asarray(genome, dtype=np.int8).tobytes()).hexdigest()[:20]


def genome_to_hex(row: np.ndarray) -> str:
    return np.asarray(row, dtype=np.int8).tobytes().hex()


def genome_from_hex(s: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(s), dtype=np.int8).copy()


def repair_all_pruned(table: LayerTable, G: np.ndarray) -> np.ndarray:
    """Genomes where no searched layer has every weight channel pruned (vectorized)."""
    if 0 not in table.w_choices:
        return G
    z = table.w_choices.index(0)
    G = G.copy()
    wg = table.w_gene_of_channel
    for i in range(table.n_layers):
        genes = np.unique(wg[table.layer_start[i] : table.layer_start[i + 1]])
        genes = genes[genes >= 0]
        if len(genes) == 0:
            continue
        dead = np.all(G[:, genes] == z, axis=1)
        if dead.any():
            G[dead, genes[0]] = z + 1
    return G
