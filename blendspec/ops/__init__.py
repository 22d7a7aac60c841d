"""Pure torch blending operators (DESIGN §3), batched over padded requests."""
