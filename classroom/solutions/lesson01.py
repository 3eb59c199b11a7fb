# Reference solutions for notebooks/01_embeddings_and_similarity.ipynb (the format: classroom/solutions/lesson00.py).

# %% check_similarity_matrix
g = torch.Generator().manual_seed(1)
image_features = torch.randn(6, 4, generator=g) * 3       # (6, 4): 6 images, 4-dim features
text_features = torch.randn(6, 4, generator=g) * 3        # (6, 4): their 6 captions

image_directions = F.normalize(image_features, dim=-1)     # (6, 4): every row now has length 1
text_directions = F.normalize(text_features, dim=-1)       # (6, 4)
answer = image_directions @ text_directions.T              # (6, 6): row i = image i, column j = caption j
