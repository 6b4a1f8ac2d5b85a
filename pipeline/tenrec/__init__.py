"""The Tenrec branch: formats, synthetic world, two-tower retrieval, FAISS index, Fastformer ranker."""
