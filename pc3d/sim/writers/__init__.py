"""Writers of the official on-disk layouts: KITTI object, SemanticKITTI, Waymo v2, ScanNet v2, scene flow."""
