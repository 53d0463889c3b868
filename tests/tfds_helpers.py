"""Writing TFDS metadata so `tfds.testing.mock_data` serves the real `data_source` path."""

import os


def prepare_metadata(data_dir, name, splits):
  """Writes the dataset_info.json of an array_record dataset (no records), as `tfds build` would."""
  import tensorflow_datasets as tfds
  builder = tfds.builder(name, data_dir=str(data_dir), file_format='array_record')
  infos = []
  for split, n in splits:
    template = tfds.core.naming.ShardedFileTemplate(
        data_dir=builder.data_dir, template='{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}',
        dataset_name=name, split=split, filetype_suffix='array_record')
    infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[n], num_bytes=0,
                                     filename_template=template))
  builder.info.set_splits(tfds.core.SplitDict(infos))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)
