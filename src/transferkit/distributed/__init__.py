"""Distributed runners: embedding on Ray Data (:func:`~transferkit.distributed.ray_embed.embed_folder_ray`)."""
