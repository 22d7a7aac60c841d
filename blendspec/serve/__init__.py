"""Serving: ``export`` (`blend export`: one torch.export artifact a model server loads with torch
alone, and its input/output contract)."""
